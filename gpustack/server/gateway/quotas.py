"""Requests-per-minute and tokens-per-minute limits of API keys and users, enforced in memory by each
server over a sliding minute (a later high-availability change will share the windows).

A request is counted when it is admitted; its tokens when its answer ends (they are known only then), so
a tokens limit refuses the requests that follow the one that went over it."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Limits:
    """Per-minute limits; None: unlimited."""

    rpm: int | None = None
    tpm: int | None = None

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None


NO_LIMITS = Limits()


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after: int  # whole seconds, at least 1


class _Window:
    """Events (a time and an amount) of the last minute, and their total."""

    __slots__ = ("events", "total")

    def __init__(self) -> None:
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.total = 0

    def trim(self, now: float) -> None:
        events = self.events
        while events and events[0][0] <= now - WINDOW_SECONDS:
            self.total -= events.popleft()[1]

    def add(self, now: float, amount: int) -> None:
        self.events.append((now, amount))
        self.total += amount

    def seconds_until_below(self, now: float, limit: int) -> int:
        """How long until the total drops below `limit` as old events leave the window."""
        total = self.total
        for at, amount in self.events:
            total -= amount
            if total < limit:
                return max(1, math.ceil(at + WINDOW_SECONDS - now))
        return 1


class Quotas:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[tuple[str, int], _Window] = {}
        self._tokens: dict[tuple[str, int], _Window] = {}

    def admit(self, subjects: list[tuple[str, int, Limits]]) -> Refusal | None:
        """Check every (kind, id, limits) a request falls under (its API key, its user); count the request
        against each when all allow it."""
        now = self._clock()
        for kind, subject_id, limits in subjects:
            key = (kind, subject_id)
            if limits.tpm is not None:
                window = self._tokens.get(key)
                if window is not None:
                    window.trim(now)
                    if window.total >= limits.tpm:
                        wait = window.seconds_until_below(now, limits.tpm)
                        return Refusal(
                            f"{_name(kind)} used {window.total} tokens in the last minute, its limit is "
                            f"{limits.tpm} tokens per minute; retry in {wait} s",
                            wait,
                        )
            if limits.rpm is not None:
                window = self._requests.setdefault(key, _Window())
                window.trim(now)
                if window.total >= limits.rpm:
                    wait = window.seconds_until_below(now, limits.rpm)
                    return Refusal(
                        f"{_name(kind)} made {window.total} requests in the last minute, its limit is "
                        f"{limits.rpm} requests per minute; retry in {wait} s",
                        wait,
                    )
        for kind, subject_id, limits in subjects:
            if limits.rpm is not None:
                self._requests[(kind, subject_id)].add(now, 1)
        return None

    def used_tokens(self, subjects: list[tuple[str, int, Limits]], tokens: int) -> None:
        if tokens <= 0:
            return
        now = self._clock()
        for kind, subject_id, limits in subjects:
            if limits.tpm is not None:
                window = self._tokens.setdefault((kind, subject_id), _Window())
                window.trim(now)
                window.add(now, tokens)

    def prune(self) -> None:
        """Forget windows that have emptied (keys and users that stopped calling)."""
        now = self._clock()
        for windows in (self._requests, self._tokens):
            for key in list(windows):
                windows[key].trim(now)
                if not windows[key].events:
                    del windows[key]


def _name(kind: str) -> str:
    return "this API key" if kind == "key" else "your user"
