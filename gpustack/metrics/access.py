"""Who may read metrics: Prometheus with the metrics token, or an administrator's API key."""

from __future__ import annotations

from gpustack.utils.tokens import tokens_equal

HOW_TO_AUTHENTICATE = (
    "send 'Authorization: Bearer <metrics token>' (the --metrics-token of this process) "
    "or an administrator's API key"
)


def bearer_of(authorization: str) -> str | None:
    """The credential of an `Authorization: Bearer <value>` header; None for anything else."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


def is_metrics_token(value: str | None, expected: str | None) -> bool:
    """Whether `value` is the configured metrics token (compared in constant time); never without one."""
    return bool(value) and bool(expected) and tokens_equal(value or "", expected or "")
