"""Relaying an upstream HTTP response to our client as it arrives, never buffered."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
from fastapi.responses import StreamingResponse

from gpustack.log import AlreadyLogged
from gpustack.utils.errors import describe_error

logger = logging.getLogger(__name__)

# Headers that describe one hop, not the content; each hop sets its own. (content-encoding stays: the
# body is relayed raw, so a compressed body must keep saying so.)
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})


# Set by a worker on errors of its own (not its engine's), so that the gateway can try another instance.
WORKER_ERROR_HEADER = "X-GPUStack-Worker-Error"


class UpstreamBrokeOff(AlreadyLogged):
    """The upstream's body ended early (an engine crashed mid-stream) after our response had begun."""


def broken_stream_event(message: str) -> bytes:
    """An event-stream error in OpenAI's shape, which its clients raise as an APIError with `message`."""
    error = {"error": {"message": message, "type": "server_error", "code": "upstream_broke_off"}}
    # The blank line first ends an event the upstream may have left half-written.
    return b"\n\ndata: " + json.dumps(error).encode() + b"\n\n"


def stream_back(upstream: httpx.Response, media_type: str | None = None) -> StreamingResponse:
    """A response that passes `upstream`'s status, content headers and body chunks through, then closes it.

    If the upstream breaks off mid-body, that is one warning line here, not a traceback: an event stream
    ends with an error event its client reads; any other body is cut off (the connection is closed
    without the final chunk), so that the client sees an incomplete response rather than a short one.
    """
    event_stream = upstream.headers.get("content-type", "").startswith("text/event-stream")

    async def chunks() -> AsyncIterator[bytes]:
        relayed = 0
        try:
            async for chunk in upstream.aiter_raw():
                relayed += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            reason = describe_error(exc, with_request=False)
            logger.warning(
                "%s %s broke off after %d bytes: %s",
                upstream.request.method,
                upstream.request.url,
                relayed,
                reason,
            )
            if not event_stream:
                raise UpstreamBrokeOff(reason) from None
            yield broken_stream_event(f"the model's engine stopped in the middle of the response ({reason})")
        finally:
            await upstream.aclose()

    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
    if media_type is not None:
        headers.pop("content-type", None)
    return StreamingResponse(
        chunks(), status_code=upstream.status_code, headers=headers, media_type=media_type
    )
