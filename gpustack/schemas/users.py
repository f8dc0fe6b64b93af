"""Users, logins and API keys."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

_USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# NIST SP 800-63B: at least 8 characters for a password a person chooses.
MIN_PASSWORD_LENGTH = 8


def check_password(value: str) -> str:
    if len(value) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(value) > 256:
        raise ValueError("password must be at most 256 characters")
    return value


Password = Annotated[str, AfterValidator(check_password)]

# Gateway limits per minute (None: no limit); strict, so that `true` or "60" is refused, not guessed at.
PerMinute = Annotated[int | None, Field(default=None, ge=1, le=10**9, strict=True)]
ModelNames = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=255)]] | None,
    Field(default=None, max_length=1000),
]


class UserCreate(BaseModel):
    username: str
    password: Password
    full_name: str = Field(default="", max_length=255)
    is_admin: bool = False
    require_password_change: bool = False
    rpm_limit: PerMinute = Field(None, description="gateway requests per minute over all its keys")
    tpm_limit: PerMinute = Field(None, description="gateway tokens per minute over all its keys")

    model_config = ConfigDict(extra="forbid")

    @field_validator("username")
    @classmethod
    def _check_username(cls, value: str) -> str:
        if not _USERNAME_RE.match(value):
            raise ValueError(
                "username must be 1-64 letters, digits or . _ @ -, starting with a letter or digit"
            )
        return value


class UserUpdate(BaseModel):
    full_name: str | None = Field(default=None, max_length=255)
    password: Password | None = None
    is_admin: bool | None = None
    require_password_change: bool | None = None
    # Given as null, a limit is removed; left out, it stays.
    rpm_limit: PerMinute = None
    tpm_limit: PerMinute = None

    model_config = ConfigDict(extra="forbid")


class UserPublic(BaseModel):
    id: int
    username: str
    full_name: str
    is_admin: bool
    require_password_change: bool
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    created_at: datetime
    updated_at: datetime

    model_config = ConfigDict(from_attributes=True)


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: Password

    model_config = ConfigDict(extra="forbid")


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    description: str = Field(default="", max_length=2000)
    # strict: JSON `true` would otherwise be read as 1 second, and "60" or 60.0 guessed at.
    expires_in: int | None = Field(
        default=None,
        gt=0,
        le=10 * 365 * 86400,
        strict=True,
        description="seconds until the key expires (a whole number); none for never",
    )
    rpm_limit: PerMinute = Field(None, description="gateway requests per minute; none for no limit")
    tpm_limit: PerMinute = Field(None, description="gateway tokens per minute; none for no limit")
    allowed_models: ModelNames = Field(None, description="the model names the key may use; none for any")

    model_config = ConfigDict(extra="forbid")


class ApiKeyUpdate(BaseModel):
    """Fields given are changed (null removes a limit or the model list); fields left out stay."""

    description: str | None = Field(default=None, max_length=2000)
    rpm_limit: PerMinute = None
    tpm_limit: PerMinute = None
    allowed_models: ModelNames = None

    model_config = ConfigDict(extra="forbid")


class ApiKeyPublic(BaseModel):
    id: int
    name: str
    description: str
    access_key: str
    user_id: int
    expires_at: datetime | None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    allowed_models: list[str] | None = None
    created_at: datetime

    model_config = ConfigDict(from_attributes=True)


class ApiKeyCreated(ApiKeyPublic):
    """Returned once, at creation: the only time the full key is shown."""

    value: str
