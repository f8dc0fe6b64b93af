"""Prometheus metrics: the server's (/metrics on its port) and each worker's (/metrics on :10151).

Every metric lives in a registry owned by one server or worker object, never in prometheus_client's
global one, so that several servers and workers can run in one process (as the tests do)."""
