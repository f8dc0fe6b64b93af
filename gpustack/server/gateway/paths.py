"""The gateway's OpenAI routes as data: which paths it answers, so that errors on them take OpenAI's
shape and their bodies get the gateway's size limit."""

from __future__ import annotations

PREFIX = "/v1-openai"
ALIAS_PREFIX = "/v1"  # what OpenAI clients configured with base_url=<server>/v1 call

# Routes relayed to an engine: the path under the prefixes, which is also the engine's path under /v1/.
RELAYED = ("chat/completions", "completions", "embeddings")

_ALIASES = frozenset(f"{ALIAS_PREFIX}/{path}" for path in RELAYED)


def speaks_openai(path: str) -> bool:
    """Whether a request path belongs to the gateway (answered in OpenAI's error shape)."""
    return path.startswith(PREFIX + "/") or path in _ALIASES
