"""Exceptions turned into words a person can act on, for state messages and log lines."""

from __future__ import annotations

import asyncio

import httpx

# What an exception that carries no text of its own means. httpx's timeouts are raised empty by
# httpcore, and a state message that says only "" tells the operator nothing.
_MEANINGS: dict[type[BaseException], str] = {
    httpx.PoolTimeout: "no connection available from the pool within {pool}",
    httpx.ConnectTimeout: "no connection within {connect}",
    httpx.ReadTimeout: "no response data within {read}",
    httpx.WriteTimeout: "could not send the request within {write}",
    httpx.TimeoutException: "the request timed out",
    httpx.RemoteProtocolError: "the peer closed the connection mid-message",
    httpx.ReadError: "the connection broke while reading",
    httpx.WriteError: "the connection broke while writing",
    httpx.ConnectError: "could not connect",
    asyncio.TimeoutError: "the operation timed out",
    ConnectionResetError: "the connection was reset by the peer",
    BrokenPipeError: "the connection was closed by the peer",
}


def _seconds(value: object) -> str:
    return f"{value:g} s" if isinstance(value, (int, float)) else "the timeout"


def _timeouts(exc: BaseException) -> dict[str, str]:
    """The request's timeouts by phase, when the exception knows its request."""
    try:
        request = exc.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is attached
        request = None
    configured = (request.extensions.get("timeout") or {}) if request is not None else {}
    return {phase: _seconds(configured.get(phase)) for phase in ("pool", "connect", "read", "write")}


def _meaning(exc: BaseException) -> str:
    for kind in type(exc).__mro__:
        template = _MEANINGS.get(kind)
        if template is not None:
            return template.format(**_timeouts(exc))
    return "no details given"


def _target(exc: BaseException) -> str:
    try:
        request = exc.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return ""
    return f" ({request.method} {request.url})" if request is not None else ""


def describe_error(exc: BaseException, with_request: bool = True) -> str:
    """`exc` as a line that always has words: 'PoolTimeout: no connection available from the pool
    within 5 s (GET http://...)'.

    Network errors keep their type name (the text alone, e.g. "[Errno 111] Connection refused", hides
    which step failed) and name the request (unless `with_request` is False, for a caller that names it
    already); other exceptions are their own text when they have one.
    """
    text = str(exc).strip()
    network = isinstance(exc, (httpx.HTTPError, OSError, asyncio.TimeoutError))
    if text and not network:
        return text
    target = _target(exc) if with_request else ""
    return f"{type(exc).__name__}: {text or _meaning(exc)}{target}"
