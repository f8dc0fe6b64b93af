"""Relaying an upstream HTTP response to our client as it arrives, never buffered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi.responses import StreamingResponse

# Headers that describe one hop, not the content; each hop sets its own. (content-encoding stays: the
# body is relayed raw, so a compressed body must keep saying so.)
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})


# Set by a worker on errors of its own (not its engine's), so that the gateway can try another instance.
WORKER_ERROR_HEADER = "X-GPUStack-Worker-Error"


def stream_back(upstream: httpx.Response, media_type: str | None = None) -> StreamingResponse:
    """A response that passes `upstream`'s status, content headers and body chunks through, then closes it."""

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
    if media_type is not None:
        headers.pop("content-type", None)
    return StreamingResponse(
        chunks(), status_code=upstream.status_code, headers=headers, media_type=media_type
    )
