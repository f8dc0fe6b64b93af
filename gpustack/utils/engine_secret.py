"""The secret an engine requires of its callers, one per model instance.

Derived from the worker's credential, which only the server and that worker know, so both can compute it
without storing or sending it: the worker starts the engine with it, the gateway (directly, or through
the worker's proxy) presents it as `Authorization: Bearer <secret>`. Another local user, or a request
that a stale route aims at a port now used by another instance, is refused by the engine itself."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "gpustack-engine"
# The variable every engine process gets it in (custom engines may read it; see backends/custom.py).
ENVIRONMENT_VARIABLE = "GPUSTACK_ENGINE_API_KEY"


def engine_secret(worker_credential: str, instance_id: int) -> str:
    digest = hmac.new(worker_credential.encode(), f"engine:{instance_id}".encode(), hashlib.sha256)
    return f"{PREFIX}_{instance_id}_{digest.hexdigest()[:40]}"
