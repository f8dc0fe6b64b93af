"""Schemathesis hooks for tests/security/test_fuzz_openapi.py (loaded through SCHEMATHESIS_HOOKS).

They keep the fuzzer from cutting the branch it sits on, and nothing else: streams that never end by
design (`watch`, `follow`) are asked for without streaming, and the fuzzing administrator's own user
and API key are not deleted or demoted. Every other value it generates is sent as generated."""

from __future__ import annotations

import os
from typing import Any

import schemathesis

_OWN_USER = os.environ.get("GPUSTACK_FUZZ_USER_ID", "1")
_OWN_KEY = os.environ.get("GPUSTACK_FUZZ_KEY_ID", "1")
_ELSEWHERE = 2**31 - 1


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    if case.query:
        for name in ("watch", "follow"):
            if name in case.query:
                case.query[name] = "false"
    method = case.operation.method.upper()
    parameters = case.path_parameters or {}
    if method in ("PUT", "DELETE") and str(parameters.get("user_id")) == _OWN_USER:
        parameters["user_id"] = _ELSEWHERE
    if method == "DELETE" and str(parameters.get("key_id")) == _OWN_KEY:
        parameters["key_id"] = _ELSEWHERE
