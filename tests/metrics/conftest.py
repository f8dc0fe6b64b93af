"""The real in-process server of tests/server, for the metrics tests."""

from tests.server.conftest import admin, server  # noqa: F401 - fixtures shared with tests/server
