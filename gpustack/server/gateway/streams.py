"""Event streams the gateway rewrites on the way through: when it asked the engine for usage on behalf of
a client that did not (stream_options.include_usage), the extra usage-only event is taken out."""

from __future__ import annotations

import json

from gpustack.metrics.gateway import Usage

_SEPARATORS = (b"\n\n", b"\r\n\r\n")


def _usage_only(event: bytes) -> Usage | None:
    """The usage of an event that carries nothing else (no choices), or None for any other event."""
    if b'"usage"' not in event:
        return None
    data = event.strip()
    if not data.startswith(b"data:"):
        return None
    try:
        payload = json.loads(data[5:])
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("choices") or not isinstance(payload.get("usage"), dict):
        return None
    usage = payload["usage"]
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Usage(
        prompt if isinstance(prompt, int) else None, completion if isinstance(completion, int) else None
    )


class UsageEventFilter:
    """Passes events through whole, as soon as each is complete, except the usage-only one, which it keeps."""

    def __init__(self) -> None:
        self._pending = b""
        self.usage: Usage | None = None

    def feed(self, piece: bytes) -> bytes:
        data = self._pending + piece if self._pending else piece
        out = []
        position = 0
        while True:
            end, separator = -1, b""
            for candidate in _SEPARATORS:
                found = data.find(candidate, position)
                if found >= 0 and (end < 0 or found < end):
                    end, separator = found, candidate
            if end < 0:
                break
            event = data[position : end + len(separator)]
            usage = _usage_only(event)
            if usage is None:
                out.append(event)
            else:
                self.usage = usage
            position = end + len(separator)
        self._pending = data[position:]
        return b"".join(out) if len(out) != 1 else out[0]

    def flush(self) -> bytes:
        """Whatever was left without an event separator (an engine that ended mid-event)."""
        rest, self._pending = self._pending, b""
        return rest
