"""What the request log adds to each request: the same tiny ASGI app called directly, bare (baseline),
behind RequestLog at info (successes not logged: the production default), and at debug (every request
formatted and handled), interleaved in one run.

    .venv/bin/python bench/request_log.py [--requests 200000]

Prints microseconds per request and what each adds over the bare app. The app sends a start and three
body chunks, as a streamed completion would.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpustack.utils.request_log import RequestLog  # noqa: E402

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "client": ("127.0.0.1", 5000)}


async def app(scope: dict, receive: object, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(2):
        await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def sink(message: dict) -> None:
    pass


async def per_request(target: Any, requests: int) -> float:
    began = time.perf_counter()
    for _ in range(requests):
        await target(SCOPE, None, sink)
    return (time.perf_counter() - began) / requests * 1e6


class Discard(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # the work a real handler does before writing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    root = logging.getLogger()
    root.handlers[:] = [Discard()]
    logged = RequestLog(app, logger_name="bench.requests")  # type: ignore[arg-type]
    results: dict[str, list[float]] = {
        "bare app (baseline)": [],
        "RequestLog, info": [],
        "RequestLog, debug": [],
    }
    for _ in range(5):
        root.setLevel(logging.INFO)
        results["bare app (baseline)"].append(asyncio.run(per_request(app, args.requests)))
        results["RequestLog, info"].append(asyncio.run(per_request(logged, args.requests)))
        root.setLevel(logging.DEBUG)
        results["RequestLog, debug"].append(asyncio.run(per_request(logged, args.requests // 10)))
    base = statistics.median(results["bare app (baseline)"])
    print(f"\n{args.requests} requests per round, 5 rounds interleaved; microseconds per request (median)\n")
    print(f"{'':24}{'us/request':>12}{'added us':>10}")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"{name:24}{value:>12.2f}{value - base:>+10.2f}")


if __name__ == "__main__":
    main()
