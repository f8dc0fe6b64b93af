"""The gateway's OpenAI routes as data: which paths it answers, so that errors on them take OpenAI's
shape and their bodies get the gateway's size limit.

`/v1/...` is the OpenAI-compatible API (what clients configured with base_url=<server>/v1 call, as in
upstream GPUStack 2.x); `/v1-openai/...` is kept as an alias. The management API lives under `/v2`."""

from __future__ import annotations

PREFIX = "/v1"
ALIAS_PREFIX = "/v1-openai"
PREFIXES = (PREFIX, ALIAS_PREFIX)


def speaks_openai(path: str) -> bool:
    """Whether a request path belongs to the gateway (answered in OpenAI's error shape), known route
    or not: an OpenAI client that calls a route we lack must still be able to read the error."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PREFIXES)
