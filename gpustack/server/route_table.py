"""The server's routes as plain data (path template, methods), for what runs before the router: the edge
that must know whether a route needs credentials, and the 405 that must name every allowed method."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.routing import BaseRoute


@dataclass(frozen=True)
class KnownRoute:
    template: str  # e.g. /v2/models/{model_id}
    regex: re.Pattern[str]
    methods: frozenset[str]


class RouteTable:
    """Built once from the routers (not from the app's router, whose internals differ between FastAPI
    versions: newer ones keep each included router as one opaque entry)."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._routes: list[KnownRoute] = []
        for route in routes:
            regex = getattr(route, "path_regex", None)
            methods = getattr(route, "methods", None)
            template = getattr(route, "path", None)
            if regex is not None and methods and isinstance(template, str):
                self._routes.append(KnownRoute(template, regex, frozenset(methods)))

    def find(self, method: str, path: str) -> str | None:
        """The template of the route serving `method` at `path`; None when the router answers 404 or 405."""
        for route in self._routes:
            if method in route.methods and route.regex.match(path):
                return route.template
        return None

    def methods_at(self, path: str) -> list[str]:
        """Every method some route serves at `path`, sorted."""
        methods: set[str] = set()
        for route in self._routes:
            if route.regex.match(path):
                methods |= route.methods
        return sorted(methods)
