"""How many gateway requests this server holds at once, in all and per model: past a limit a request is
refused at once (with Retry-After) instead of queueing until something times out."""

from __future__ import annotations

from dataclasses import dataclass

SERVER_FLAG = "--gateway-max-in-flight"
MODEL_FLAG = "--gateway-model-max-in-flight"


@dataclass(frozen=True)
class Refused:
    status: int
    message: str
    code: str


class Admission:
    def __init__(self, server_limit: int, model_limit: int) -> None:
        self.server_limit = server_limit  # 0: none
        self.model_limit = model_limit
        self.in_flight = 0
        self._per_model: dict[str, int] = {}

    def enter(self) -> Refused | None:
        """Count a request in (before its body is read); a Refused when the server is full."""
        if self.server_limit and self.in_flight >= self.server_limit:
            return Refused(
                503,
                f"this server is handling {self.in_flight} requests, its limit ({SERVER_FLAG} "
                f"{self.server_limit}); retry shortly",
                "server_overloaded",
            )
        self.in_flight += 1
        return None

    def leave(self) -> None:
        self.in_flight -= 1

    def enter_model(self, model: str) -> Refused | None:
        count = self._per_model.get(model, 0)
        if self.model_limit and count >= self.model_limit:
            return Refused(
                429,
                f"model {model!r} has {count} requests in flight on this server, its limit "
                f"({MODEL_FLAG} {self.model_limit}); retry shortly",
                "model_overloaded",
            )
        self._per_model[model] = count + 1
        return None

    def leave_model(self, model: str) -> None:
        count = self._per_model.get(model, 0) - 1
        if count > 0:
            self._per_model[model] = count
        else:
            self._per_model.pop(model, None)
