"""Process-wide logging: one format, a TRACE level, and a level that can change at run time."""

from __future__ import annotations

import logging

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class AlreadyLogged(Exception):
    """An expected failure, logged in one line where it happened, that must still end the request (e.g. a
    relayed stream cut off mid-body): the HTTP server closes the connection but logs no traceback."""


def _caused_by_already_logged(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 10:  # through ExceptionGroups and "raise ... from"
        if isinstance(error, AlreadyLogged):
            return True
        grouped = getattr(error, "exceptions", None)
        if isinstance(grouped, tuple) and any(_caused_by_already_logged(e) for e in grouped):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


class _DropAlreadyLogged(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _caused_by_already_logged(record.exc_info[1]))


def quiet_already_logged() -> None:
    """Keep uvicorn from logging a traceback for an AlreadyLogged failure (idempotent)."""
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropAlreadyLogged) for f in server_log.filters):
        server_log.addFilter(_DropAlreadyLogged())


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level("debug" if debug else "info")
    # Third-party loggers are chatty at debug; they follow our level only from warning up.
    noisy_loggers = ("httpx", "httpcore", "aiosqlite", "asyncio", "multipart", "alembic", "uvicorn.error")
    # huggingface_hub's HTTP client (httpx2) logs every request at info
    for noisy in (*noisy_loggers, "httpx2", "httpcore2", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_already_logged()


def set_level(name: str) -> None:
    """Set the level of every gpustack logger; raises ValueError naming the accepted levels."""
    key = name.strip().lower()
    if key not in LEVELS:
        raise ValueError(f"unknown log level {name.strip()!r}; use one of: {', '.join(LEVELS)}")
    logging.getLogger().setLevel(LEVELS[key])


def current_level() -> str:
    level = logging.getLogger().getEffectiveLevel()
    for name, value in LEVELS.items():
        if value == level:
            return name
    return logging.getLevelName(level).lower()
