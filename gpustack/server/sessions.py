"""Browser sessions: created at login, ended by logout, a password change or the user's deletion."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.server import security
from gpustack.server.db.tables import UserSessionRow


async def create_session(session: AsyncSession, user_id: int) -> str:
    """A new session for the user (committed by the caller); the token goes to the browser only.
    Expired sessions are swept here, so the table stays as small as the sessions alive."""
    now = datetime.now(timezone.utc)
    await session.execute(delete(UserSessionRow).where(UserSessionRow.expires_at <= now))
    token = security.new_session_token()
    session.add(
        UserSessionRow(
            token_hash=security.hash_secret(token),
            user_id=user_id,
            created_at=now,
            expires_at=now + timedelta(seconds=security.SESSION_TTL_SECONDS),
        )
    )
    return token


async def end_session(session: AsyncSession, token: str) -> None:
    await session.execute(
        delete(UserSessionRow).where(UserSessionRow.token_hash == security.hash_secret(token))
    )


async def end_user_sessions(session: AsyncSession, user_id: int) -> None:
    """Every session of the user, in every browser."""
    await session.execute(delete(UserSessionRow).where(UserSessionRow.user_id == user_id))
