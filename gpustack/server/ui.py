"""The web UI: the built single-page app (ui/ → gpustack/server/static/) served at `/` on the API's origin.

It is the router's fallback, so it never shadows a route: what no route answers is a file of the build, a
client route of the app (index.html, which routes in the browser), or the API's usual 404. Hashed assets
are cached for a year; index.html is revalidated on every load, so a new build shows at once. A gzipped
copy built beside a file is sent to clients that accept it."""

from __future__ import annotations

import hashlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.types import Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "index.html"

# Paths that belong to the API (or its documentation): an unknown one is the API's 404, never the app.
API_PREFIXES = ("/v1", "/v1-openai", "/v2", "/auth", "/debug", "/docs", "/redoc", "/openapi.json")
API_PATHS = frozenset({"/healthz", "/readyz", "/version"})

# Vite names what it emits under assets/ by content hash: a name never changes meaning.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# Everything the app loads comes from this origin (clusters are often offline, and a page that could reach
# elsewhere could leak). Ant Design writes its styles at run time, hence 'unsafe-inline' for styles only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GPUStack: the web UI is not built</title></head>
<body style="font-family: sans-serif; max-width: 46em; margin: 3em auto; line-height: 1.5">
<h1>The web UI is not built</h1>
<p>This server has no build of the web UI in <code>{folder}</code>. The API works without it
(<a href="/docs">/docs</a>).</p>
<p>To build it from a source checkout (Node.js 20 and npm are needed; <code>scripts/setup.sh</code> installs
Node.js from Debian where it is missing):</p>
<pre>bash scripts/setup.sh
# or only the UI:
cd ui &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>then reload this page; the server needs no restart.</p>
</body></html>
"""


def is_api_path(path: str) -> bool:
    return path in API_PATHS or any(path == p or path.startswith(p + "/") for p in API_PREFIXES)


@dataclass(frozen=True)
class StaticFile:
    path: Path  # what is sent (maybe the .gz copy)
    media_type: str
    gzipped: bool
    size: int
    mtime: float

    @property
    def etag(self) -> str:
        digest = hashlib.blake2s(f"{self.path.name}:{self.size}:{self.mtime}".encode(), digest_size=8)
        return f'"{digest.hexdigest()}"'


class WebUI:
    """An ASGI app for the router's fallback (`app.router.default`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _find(self, relative: str, accepts_gzip: bool) -> StaticFile | None:
        """The build's file at `relative`, or None. Nothing outside the folder is ever reachable."""
        if not relative or "\\" in relative or "\x00" in relative:
            return None
        parts = relative.split("/")
        if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            return None
        path = self.folder.joinpath(*parts)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type in ("application/javascript", "image/svg+xml"):
            media_type += "; charset=utf-8"
        candidates = [(Path(f"{path}.gz"), True)] if accepts_gzip else []
        for candidate, gzipped in [*candidates, (path, False)]:
            try:
                stat = candidate.stat()
            except (OSError, ValueError):
                continue
            if os.path.isfile(candidate):
                return StaticFile(candidate, media_type, gzipped, stat.st_size, stat.st_mtime)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or is_api_path(path):
            raise HTTPException(status_code=404)
        headers = Headers(scope=scope)
        accepts_gzip = "gzip" in headers.get("accept-encoding", "")
        relative = path.lstrip("/")
        found = self._find(relative, accepts_gzip) if relative else None
        if found is None:
            if "." in relative.rsplit("/", 1)[-1]:
                raise HTTPException(status_code=404)  # a file that is not in the build, not a page
            found = self._find(INDEX, accepts_gzip)  # a client route: the app routes it in the browser
            if found is None:
                page = NOT_BUILT_PAGE.format(folder=self.folder)
                response: Response = HTMLResponse(page, status_code=404, headers=SECURITY_HEADERS)
                await response(scope, receive, send)
                return
        cache = IMMUTABLE if found.path.parent == self.folder / "assets" else REVALIDATE
        await self._send(scope, receive, send, found, cache, headers)

    async def _send(
        self, scope: Scope, receive: Receive, send: Send, found: StaticFile, cache: str, request: Headers
    ) -> None:
        headers = {"Cache-Control": cache, "ETag": found.etag, "Vary": "Accept-Encoding", **SECURITY_HEADERS}
        if found.gzipped:
            headers["Content-Encoding"] = "gzip"
        if found.etag in [tag.strip() for tag in request.get("if-none-match", "").split(",")]:
            response: Response = Response(status_code=304, headers=headers)
        else:
            response = FileResponse(found.path, media_type=found.media_type, headers=headers)
        await response(scope, receive, send)


def install(app: FastAPI, folder: Path | None = None) -> None:
    """Serve the UI from `folder` (the package's build by default) for whatever no route answers."""
    app.router.default = WebUI(folder or STATIC_DIR)
