"""Cross-origin requests from browsers: off unless --enable-cors; then the origins of --allow-origins
(default any) may call the API, with credentials, and preflights are answered before authentication
(browsers send them without credentials)."""

from __future__ import annotations

from dataclasses import dataclass

ALLOWED_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
EXPOSED_HEADERS = b"X-Request-ID, Retry-After"
MAX_AGE_SECONDS = b"600"


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[str]  # "*": any

    def allows(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """Added to the answer of a request that came with an allowed Origin. The origin itself is named,
        not '*', because credentials (cookies, Authorization) are allowed."""
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", EXPOSED_HEADERS),
            (b"vary", b"Origin"),
        ]

    def preflight_headers(self, origin: bytes, requested_headers: bytes | None) -> list[tuple[bytes, bytes]]:
        headers = self.response_headers(origin)[:2] + [
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-max-age", MAX_AGE_SECONDS),
            (b"vary", b"Origin, Access-Control-Request-Headers"),
        ]
        if requested_headers:
            headers.append((b"access-control-allow-headers", requested_headers))
        return headers


def policy_of(enabled: bool, origins: list[str]) -> CorsPolicy | None:
    if not enabled:
        return None
    return CorsPolicy(frozenset(origins or ["*"]))
