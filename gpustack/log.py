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


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level("debug" if debug else "info")
    # Third-party loggers are chatty at debug; they follow our level only from warning up.
    for noisy in ("httpx", "httpcore", "aiosqlite", "asyncio", "multipart", "alembic", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
