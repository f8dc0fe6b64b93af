"""Reports to a slow server: one in flight per instance, the latest state next, none overtaking another.
Resending on every resync while earlier reports were unanswered piled up requests on a server that was
already slow (bench/many_engines.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gpustack.config import load_config
from gpustack.schemas.models import ModelInstanceState, ModelInstanceStateUpdate
from gpustack.worker.serve import RunningEngine, ServeManager


class SlowServer:
    """Answers reports only when the test lets it; counts how many wait at once."""

    def __init__(self) -> None:
        self.received: list[ModelInstanceState] = []
        self.waiting = 0
        self.most_waiting = 0
        self.answer = asyncio.Event()

    async def report_instance(self, instance_id: int, update: ModelInstanceStateUpdate) -> None:
        self.received.append(update.state)
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self.answer.wait()
        finally:
            self.waiting -= 1


async def test_a_slow_server_gets_one_report_at_a_time_and_the_latest_state_last(tmp_path: Path) -> None:
    server = SlowServer()
    config = load_config({"data_dir": str(tmp_path / "data")}, {})
    manager = ServeManager(config, lambda: 1, server, lambda: [])  # type: ignore[arg-type]
    engine = RunningEngine(instance_id=5, name="m-5")
    engine.last_update = ModelInstanceStateUpdate(worker_id=1, state=ModelInstanceState.STARTING)
    manager.engines[5] = engine
    view = {5: {"id": 5, "name": "m-5", "worker_id": 1, "state": "initializing", "gpu_indexes": []}}
    for _ in range(5):  # resyncs while the server still shows an older state
        manager.reconcile(view)
        engine.last_sent_at = 0.0  # as if the resend interval had passed each time
        await asyncio.sleep(0.01)
    sending_error = asyncio.create_task(manager._send(engine, ModelInstanceState.ERROR, "the engine exited"))
    await asyncio.sleep(0.01)
    assert server.received == [ModelInstanceState.STARTING] and server.waiting == 1
    server.answer.set()
    assert await sending_error
    assert server.received == [ModelInstanceState.STARTING, ModelInstanceState.ERROR]
    assert server.most_waiting == 1
    await manager.shutdown()
