"""The campaign for the leader lease, against a stand-in lease (no database needed)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from gpustack.server import leader
from gpustack.server.leader import Leadership
from gpustack.server.leader_lease import Candidate


class FlakyLease:
    """A lease whose database fails with the given errors, one per attempt, and then is won."""

    def __init__(self, errors: list[str], term: int) -> None:
        self.me = Candidate("me", "host", "/var/lib/me", "me:80", 1)
        self.ttl = timedelta(seconds=10)
        self.errors = errors
        self.term = term
        self.attempts = 0

    async def acquire(self) -> int:
        self.attempts += 1
        if self.errors:
            raise OSError(self.errors.pop(0))
        return self.term


async def test_a_database_that_stays_away_is_reported_once_per_error_not_every_second(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A server whose database is down would otherwise write the same warning every second until it is back.
    monkeypatch.setattr(leader, "CAMPAIGN_SECONDS", 0.0)
    refused = "connection refused"
    lease = FlakyLease([refused] * 5 + ["the database is starting up"] * 3 + [refused], term=7)
    leadership = Leadership(lease, lead=None)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger=leader.__name__):
        assert await leadership._campaign() == 7
    assert lease.attempts == 10
    said = [r.getMessage() for r in caplog.records if "cannot reach the leader lease" in r.getMessage()]
    assert len(said) == 3, said  # each time the error changed, and not while it stayed the same
    assert [refused in said[0], "starting up" in said[1], refused in said[2]] == [True, True, True]
