"""Suite-wide rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped integration test is a failure: it would hide a broken setup (the
    real Kafka and Redis are always started by `make test`)."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("integration") is not None:
        report.outcome = "failed"
        report.longrepr = f"integration test skipped ({report.longrepr}); integration tests must run, never skip"
