"""Suite-wide fixtures and the CI skip policy (see tests/support.py).

In CI (``CI=true``) every test must run: any skip makes the run fail at the end.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support import IN_CI, require_root, require_tool

# A noisy 2-core machine must not turn a slow example into a failure: no per-example deadline.
# In CI the examples are derandomized so a run is reproducible from its log.
settings.register_profile("natkit", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("natkit-ci", parent=settings.get_profile("natkit"), derandomize=True, database=None)
settings.load_profile("natkit-ci" if IN_CI else "natkit")

_skipped: list[str] = []


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with ``lo`` up; deleted on teardown, also when the test fails."""
    require_root()
    require_tool("ip", "iproute2")
    name = f"natkit-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped:
        print(f"\nCI=true: {len(_skipped)} test(s) skipped; in CI every test must run:")
        for line in _skipped:
            print(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
