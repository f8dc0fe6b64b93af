"""Gateway usage as GET /v2/usage reports it: sums of requests and tokens over a time range, grouped."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel


class UsageGroup(str, Enum):
    MODEL = "model"
    USER = "user"
    API_KEY = "api_key"
    HOUR = "hour"
    DAY = "day"


class UsageTotals(BaseModel):
    requests: int = 0
    failed_requests: int = 0  # answered 5xx by the engine, or cut off mid-answer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class UsageItem(UsageTotals):
    """One group; only the fields it is grouped by are set."""

    model: str | None = None
    user_id: int | None = None
    username: str | None = None  # None once the user is deleted
    api_key_id: int | None = None  # 0: a browser session
    api_key_name: str | None = None  # None for a session, or once the key is deleted
    hour: datetime | None = None  # the start of the hour (UTC)
    day: str | None = None  # YYYY-MM-DD (UTC)


class UsageReport(BaseModel):
    start: datetime
    end: datetime
    group_by: list[UsageGroup]
    items: list[UsageItem]
    total: UsageTotals
