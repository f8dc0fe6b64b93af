"""Slowing down password guessing: per user name and per client address, growing delays after a few
failures, answered with 429 and Retry-After before any password is hashed."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Failures:
    count: int
    last_at: float
    blocked_until: float


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int  # failures allowed before the first delay
    first_delay: float  # seconds; doubles with each further failure
    max_delay: float
    forget_after: float  # seconds without a failure after which the count starts again


# A person mistyping gets 5 tries, then waits 1 s, 2 s, 4 s, ... at most 5 minutes. One address gets
# more (an office behind one NAT), but then the same growth.
USERNAME_POLICY = ThrottlePolicy(free_failures=5, first_delay=1.0, max_delay=300.0, forget_after=900.0)
ADDRESS_POLICY = ThrottlePolicy(free_failures=20, first_delay=1.0, max_delay=300.0, forget_after=900.0)


class _Counter:
    """Failures per key, bounded in memory (least recently failed keys go first)."""

    def __init__(self, policy: ThrottlePolicy, max_keys: int = 100_000) -> None:
        self.policy = policy
        self.max_keys = max_keys
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def wait_seconds(self, key: str, now: float) -> float:
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        if now - entry.last_at > self.policy.forget_after:
            del self._failures[key]
            return 0.0
        return max(0.0, entry.blocked_until - now)

    def fail(self, key: str, now: float) -> None:
        entry = self._failures.pop(key, None)
        if entry is None or now - entry.last_at > self.policy.forget_after:
            entry = _Failures(0, now, now)
        entry.count += 1
        entry.last_at = now
        over = entry.count - self.policy.free_failures
        if over > 0:
            delay = min(self.policy.max_delay, self.policy.first_delay * 2 ** min(over - 1, 30))
            entry.blocked_until = now + delay
        self._failures[key] = entry
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


class LoginThrottle:
    def __init__(
        self,
        username_policy: ThrottlePolicy = USERNAME_POLICY,
        address_policy: ThrottlePolicy = ADDRESS_POLICY,
    ) -> None:
        self._usernames = _Counter(username_policy)
        self._addresses = _Counter(address_policy)

    def retry_after(self, username: str, address: str) -> int:
        """Whole seconds this attempt must wait, 0 when it may go ahead."""
        now = time.monotonic()
        wait = max(
            self._usernames.wait_seconds(username.lower(), now), self._addresses.wait_seconds(address, now)
        )
        return math.ceil(wait)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        self._usernames.fail(username.lower(), now)
        self._addresses.fail(address, now)

    def succeeded(self, username: str) -> None:
        # The address keeps its count: one valid account must not reset a guesser's budget.
        self._usernames.forget(username.lower())
