"""Comparing secrets without leaking, through timing, how much of a guess was right."""

from __future__ import annotations

import hmac


def tokens_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
