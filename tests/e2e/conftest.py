"""Lets e2e fixtures see whether the test failed, to print the processes' logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:  # type: ignore[type-arg]
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
