"""One log line per HTTP request: client, method, path, status and duration; failures at info, the rest
at debug. Cheap enough for the gateway's path: with debug off, a request that succeeds costs a clock
read and one comparison per message sent."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A request that fails (4xx, 5xx, or a response cut off) is logged at info; the others at debug.
FAILED_STATUS = 400


class RequestLog:
    """ASGI middleware: `app.add_middleware(RequestLog, logger_name=...)`."""

    def __init__(self, app: ASGIApp, logger_name: str = "gpustack.requests") -> None:
        self.app = app
        self.logger = logging.getLogger(logger_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        outcome = ""
        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            outcome = " (cut off)" if status else ""
            status = status or 500
            raise
        finally:
            level = logging.INFO if status >= FAILED_STATUS or outcome else logging.DEBUG
            if self.logger.isEnabledFor(level):
                self._log(level, scope, status, outcome, started)

    def _log(self, level: int, scope: Scope, status: int, outcome: str, started: float) -> None:
        client: Any = scope.get("client")
        self.logger.log(
            level,
            '%s "%s %s" %d%s %.1f ms',
            client[0] if client else "-",
            scope["method"],
            scope["path"],  # no query string: it may carry what should stay out of logs
            status,
            outcome,
            (time.perf_counter() - started) * 1000,
        )
