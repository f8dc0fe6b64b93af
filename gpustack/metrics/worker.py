"""A worker's metrics: its GPUs (from detection), its machine, each engine process's CPU and memory, the
model files it is downloading, and the engines' own metrics passed through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence

import psutil
from prometheus_client import CollectorRegistry, ProcessCollector, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gpustack import __version__
from gpustack.metrics.engines import EngineProcess, EngineScraper, Families
from gpustack.schemas.workers import GPUDevice
from gpustack.worker.files.manager import DownloadInProgress

GPU_LABELS = ["worker", "gpu", "gpu_index", "gpu_name", "gpu_type"]
ENGINE_LABELS = ["worker", "model", "model_instance"]


def gpu_families(worker: str, devices: Sequence[GPUDevice]) -> list[Metric]:
    """Per GPU: utilization, memory used and total, temperature (where the vendor tool reports one)."""
    utilization = GaugeMetricFamily(
        "gpustack_gpu_utilization_ratio", "GPU core utilization, 0 to 1.", labels=GPU_LABELS
    )
    used = GaugeMetricFamily("gpustack_gpu_memory_used_bytes", "GPU memory in use.", labels=GPU_LABELS)
    total = GaugeMetricFamily("gpustack_gpu_memory_total_bytes", "GPU memory in all.", labels=GPU_LABELS)
    temperature = GaugeMetricFamily(
        "gpustack_gpu_temperature_celsius",
        "GPU temperature, where the vendor's tool reports it.",
        labels=GPU_LABELS,
    )
    for device in devices:
        labels = [worker, device.id, str(device.index), device.name, device.type.value]
        utilization.add_metric(labels, device.core.utilization_rate / 100.0)
        used.add_metric(labels, device.memory.used)
        total.add_metric(labels, device.memory.total)
        if device.temperature is not None:
            temperature.add_metric(labels, device.temperature)
    return [utilization, used, total, temperature]


def _process_tree(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a process and its children; None once it has exited."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu = 0.0
    rss = 0
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                cpu += times.user + times.system
                rss += process.memory_info().rss
        except psutil.Error:
            continue  # a child that ended meanwhile
    return cpu, rss


def engine_families(worker: str, engines: Sequence[EngineProcess]) -> list[Metric]:
    up = GaugeMetricFamily(
        "gpustack_engine_up",
        "1 while the instance's engine process runs on this worker.",
        labels=ENGINE_LABELS,
    )
    cpu = CounterMetricFamily(
        "gpustack_engine_cpu_seconds",
        "CPU time of the engine process and its children.",
        labels=ENGINE_LABELS,
    )
    rss = GaugeMetricFamily(
        "gpustack_engine_resident_memory_bytes",
        "Resident memory of the engine process and its children.",
        labels=ENGINE_LABELS,
    )
    for engine in engines:
        labels = [worker, engine.model, engine.instance]
        usage = _process_tree(engine.pid) if engine.pid else None
        up.add_metric(labels, 0 if usage is None else 1)
        if usage is not None:
            cpu.add_metric(labels, usage[0])
            rss.add_metric(labels, usage[1])
    return [up, cpu, rss]


def download_families(worker: str, downloads: Sequence[DownloadInProgress]) -> list[Metric]:
    running = GaugeMetricFamily(
        "gpustack_worker_downloads_in_progress",
        "Model file downloads running on this worker.",
        labels=["worker"],
    )
    running.add_metric([worker], len(downloads))
    done = GaugeMetricFamily(
        "gpustack_worker_download_bytes",
        "Bytes on disk of a model file download in progress (resumed bytes included).",
        labels=["worker", "model_file"],
    )
    total = GaugeMetricFamily(
        "gpustack_worker_download_total_bytes",
        "Bytes in all of a model file download in progress (0 until its files are listed).",
        labels=["worker", "model_file"],
    )
    for download in downloads:
        done.add_metric([worker, download.what], download.done)
        total.add_metric([worker, download.what], download.total)
    return [running, done, total]


def machine_families(worker: str) -> list[Metric]:
    memory = psutil.virtual_memory()
    cpu = GaugeMetricFamily(
        "gpustack_worker_cpu_utilization_ratio",
        "CPU utilization of the worker's machine since the previous scrape, 0 to 1.",
        labels=["worker"],
    )
    cpu.add_metric([worker], psutil.cpu_percent(interval=None) / 100.0)
    used = GaugeMetricFamily(
        "gpustack_worker_memory_used_bytes", "Memory in use on the worker's machine.", labels=["worker"]
    )
    used.add_metric([worker], memory.total - memory.available)
    total = GaugeMetricFamily(
        "gpustack_worker_memory_total_bytes", "Memory of the worker's machine.", labels=["worker"]
    )
    total.add_metric([worker], memory.total)
    return [cpu, used, total]


class _Snapshot:
    """What one scrape reports, taken on the event loop and read by the collector in a thread."""

    def __init__(self) -> None:
        self.worker = ""
        self.devices: Sequence[GPUDevice] = ()
        self.engines: Sequence[EngineProcess] = ()
        self.downloads: Sequence[DownloadInProgress] = ()

    def collect(self) -> Iterator[Metric]:
        yield from machine_families(self.worker)
        yield from gpu_families(self.worker, self.devices)
        yield from engine_families(self.worker, self.engines)
        yield from download_families(self.worker, self.downloads)


class WorkerMetrics:
    """Every metric of one worker, in its own registry."""

    def __init__(
        self,
        worker: Callable[[], str],
        devices: Callable[[], Sequence[GPUDevice]],
        engines: Callable[[], Sequence[EngineProcess]],
        downloads: Callable[[], Sequence[DownloadInProgress]] = lambda: (),
    ) -> None:
        disable_created_metrics()
        self._worker = worker
        self._devices = devices
        self._engines = engines
        self._downloads = downloads
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        info = GaugeMetricFamily(
            "gpustack_build_info", "Version of this gpustack process.", labels=["version", "role"]
        )
        info.add_metric([__version__, "worker"], 1)
        self.registry.register(Families([info]))
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self._scraper = EngineScraper()
        self._lock = asyncio.Lock()
        psutil.cpu_percent(interval=None)  # the first reading only starts the interval

    async def render(self) -> bytes:
        async with self._lock:  # one scrape at a time: the snapshot is shared
            worker = self._worker()
            engines = list(self._engines())
            self._snapshot.worker = worker
            self._snapshot.devices = list(self._devices())
            self._snapshot.engines = engines
            self._snapshot.downloads = list(self._downloads())
            passthrough = await self._scraper.collect(worker, engines)
            # /proc reads of every engine process: off the event loop that relays requests.
            own = await asyncio.to_thread(generate_latest, self.registry)
        return own + generate_latest(Families(passthrough))

    async def aclose(self) -> None:
        await self._scraper.aclose()
