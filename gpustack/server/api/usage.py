"""GET /v2/usage: what the gateway served, in requests and tokens, over a time range, grouped by model,
user, API key, hour or day. Administrators see everyone's; other users their own.

Usage is kept per hour (gateway/usage.py): a range is taken in whole hours, from the hour that holds
`start` to the one before `end`'s (an `end` on the hour excludes that hour)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select

from gpustack.schemas.usage import UsageGroup, UsageItem, UsageReport, UsageTotals
from gpustack.server.api.common import QueryId
from gpustack.server.auth import Principal, context, require_user
from gpustack.server.db.tables import ApiKeyRow, UsageRow, UserRow
from gpustack.server.errors import BadRequest

router = APIRouter(prefix="/v2/usage", tags=["usage"])

DEFAULT_RANGE = timedelta(days=7)
MAX_RANGE = timedelta(days=3 * 366)
_COLUMNS = {
    UsageGroup.MODEL: UsageRow.model_name,
    UsageGroup.USER: UsageRow.user_id,
    UsageGroup.API_KEY: UsageRow.api_key_id,
}


EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def _utc(value: datetime, name: str) -> datetime:
    try:
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999 moved by its offset past what a datetime holds
        raise BadRequest(f"{name}: {value.isoformat()} is out of range in UTC") from None


def _groups(group_by: str) -> list[UsageGroup]:
    groups = []
    for part in (p.strip() for p in group_by.split(",")):
        if not part:
            continue
        try:
            group = UsageGroup(part)
        except ValueError:
            known = ", ".join(g.value for g in UsageGroup)
            raise BadRequest(
                f"group_by: unknown group {part!r}; use any of {known}, separated by commas"
            ) from None
        if group not in groups:
            groups.append(group)
    if UsageGroup.HOUR in groups and UsageGroup.DAY in groups:
        raise BadRequest("group_by: choose hour or day, not both")
    return groups


@router.get("", response_model=UsageReport)
async def usage(
    request: Request,
    start: datetime | None = Query(None, description="from this time (ISO 8601; default: 7 days before end)"),
    end: datetime | None = Query(None, description="until this time (ISO 8601; default: now)"),
    group_by: str = Query("model", description="model, user, api_key, hour or day, separated by commas"),
    model: str | None = Query(None, max_length=255, description="only this model name"),
    user_id: QueryId = None,
    api_key_id: int | None = Query(None, ge=0, le=2**31 - 1, description="only this key (0: sessions)"),
    principal: Principal = Depends(require_user),
) -> UsageReport:
    groups = _groups(group_by)
    until = _utc(end, "end") if end is not None else datetime.now(timezone.utc)
    if start is not None:
        since = _utc(start, "start")
    else:  # the default range, from year 1 at the earliest
        since = until - DEFAULT_RANGE if until - EARLIEST > DEFAULT_RANGE else EARLIEST
    if since >= until:
        raise BadRequest("start must be before end")
    if until - since > MAX_RANGE:
        raise BadRequest("the range may cover at most 3 years; narrow start and end")
    if not principal.is_admin:
        if user_id is not None and user_id != principal.user_id:
            raise BadRequest("user_id: you may see only your own usage")
        user_id = principal.user_id
    first_hour = since.replace(minute=0, second=0, microsecond=0)

    keys = [_COLUMNS[g] for g in groups if g in _COLUMNS]
    timed = UsageGroup.HOUR in groups or UsageGroup.DAY in groups
    if timed:
        keys.append(UsageRow.hour)
    sums = [
        func.sum(UsageRow.requests),
        func.sum(UsageRow.failed_requests),
        func.sum(UsageRow.prompt_tokens),
        func.sum(UsageRow.completion_tokens),
    ]
    statement = select(*keys, *sums).where(UsageRow.hour >= first_hour, UsageRow.hour < until)
    if model is not None:
        statement = statement.where(UsageRow.model_name == model)
    if user_id is not None:
        statement = statement.where(UsageRow.user_id == user_id)
    if api_key_id is not None:
        statement = statement.where(UsageRow.api_key_id == api_key_id)
    if keys:
        statement = statement.group_by(*keys)
    async with context(request).session() as session:
        rows: list[Any] = list((await session.execute(statement)).all())
        names = await _names(session, rows, groups)

    folded: dict[tuple[Any, ...], UsageItem] = {}
    total = UsageTotals()
    for row in rows:
        values = dict(zip([g for g in groups if g in _COLUMNS], row[: len(keys) - timed], strict=False))
        counts = [int(v or 0) for v in row[len(keys) :]]
        item = UsageItem()
        if UsageGroup.MODEL in values:
            item.model = values[UsageGroup.MODEL]
        if UsageGroup.USER in values:
            item.user_id = values[UsageGroup.USER]
            item.username = names["users"].get(item.user_id)
        if UsageGroup.API_KEY in values:
            item.api_key_id = values[UsageGroup.API_KEY]
            item.api_key_name = names["keys"].get(item.api_key_id)
        if timed:
            hour = row[len(keys) - 1]
            hour = hour.replace(tzinfo=timezone.utc) if hour.tzinfo is None else hour
            if UsageGroup.HOUR in groups:
                item.hour = hour
            else:
                item.day = hour.date().isoformat()
        key = (item.model, item.user_id, item.api_key_id, item.hour, item.day)
        kept = folded.setdefault(key, item)
        for totals in (kept, total):
            totals.requests += counts[0]
            totals.failed_requests += counts[1]
            totals.prompt_tokens += counts[2]
            totals.completion_tokens += counts[3]
            totals.total_tokens += counts[2] + counts[3]
    items = sorted(
        folded.values(),
        key=lambda i: (i.hour or datetime.min.replace(tzinfo=timezone.utc), i.day or "", i.model or "",
                       i.user_id or 0, i.api_key_id or 0),
    )  # fmt: skip
    return UsageReport(start=first_hour, end=until, group_by=groups, items=items, total=total)


async def _names(session: Any, rows: list[Any], groups: list[UsageGroup]) -> dict[str, dict[int, str]]:
    """Names of the users and keys in the result that still exist."""
    found: dict[str, dict[int, str]] = {"users": {}, "keys": {}}
    columns = [g for g in groups if g in _COLUMNS]
    if UsageGroup.USER in columns:
        ids = {row[columns.index(UsageGroup.USER)] for row in rows}
        if ids:
            result = await session.execute(select(UserRow.id, UserRow.username).where(UserRow.id.in_(ids)))
            found["users"] = {i: n for i, n in result.all()}
    if UsageGroup.API_KEY in columns:
        ids = {row[columns.index(UsageGroup.API_KEY)] for row in rows} - {0}
        if ids:
            result = await session.execute(select(ApiKeyRow.id, ApiKeyRow.name).where(ApiKeyRow.id.in_(ids)))
            found["keys"] = {i: n for i, n in result.all()}
    return found
