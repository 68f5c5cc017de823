"""A pytest plugin that says which real servers a run used, and which it skipped and why.

``scripts/test`` loads it (``-p tests.helpers.servers``). The tests of the
cluster engines, of ssh and of network faults run against real servers
(SLURM, Grid Engine, SLURM's PBS commands, sshd in a network namespace) and
skip when one is missing, unless CI's ``PYCREW_REQUIRE_*`` variable turns
the skip into a failure. A run on a fresh machine therefore passes with
those tests skipped; this block at the end of the run says so:

```
======================== real servers ========================
  SLURM               used: 21 tests
  Grid Engine         skipped 6 tests: Grid Engine's commands are not installed (...)
  ...
To run the skipped tests, bring their servers up as root ...
```

A test belongs to a server by the fixture that brings the server in (or by
its name, where a test checks for the server itself), and any test skipped
with a server's reason counts for that server too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest
    from _pytest.terminal import TerminalReporter

#: how to bring every server up (as root, on a machine you can throw away)
HOW = (
    "To run the skipped tests, bring their servers up as root on a machine you can",
    "throw away: .ci/run does all of it and runs the suite; or scripts/slurm-cluster up,",
    "scripts/sge-cluster up, PYCREW_PBS_COMMANDS=$(scripts/pbs-commands) (over SLURM),",
    "apt-get install openssh-server iproute2 (sshd and network namespaces), and",
    "apt-get install chromium chromium-driver (the dashboard's browser tests).",
)


@dataclass
class Server:
    """One real server some tests need, and what became of those tests in this run."""

    label: str
    #: CI's variable that turns a missing server into failures
    require: str
    #: (test module, fixture that brings the server in, or ``name:`` and a part of
    #: the test's name)
    tests: tuple[tuple[str, str], ...]
    #: marks the skip (or, with ``require``, failure) reasons of its tests
    reason_marks: tuple[str, ...]
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def owns(self, module: str, name: str, fixtures: list[str]) -> bool:
        for where, what in self.tests:
            if module != where:
                continue
            if what.startswith("name:") and what[5:] in name:
                return True
            if what in fixtures:
                return True
        return False


def _servers() -> list[Server]:
    return [
        Server(
            "SLURM",
            "PYCREW_REQUIRE_SLURM",
            (
                ("tests/engines/test_slurm.py", "cluster"),
                ("tests/engines/test_monitor.py", "cluster"),
                ("tests/integrations/test_joblib.py", "name:slurm"),
                ("tests/operations/test_logging.py", "cluster"),
            ),
            ("SLURM", "sinfo"),
        ),
        Server(
            "Grid Engine",
            "PYCREW_REQUIRE_SGE",
            (("tests/engines/test_sge.py", "sge"),),
            ("Grid Engine",),
        ),
        Server(
            "PBS commands",
            "PYCREW_REQUIRE_PBS",
            (("tests/engines/test_pbs.py", "pbs"),),
            ("PBS", "qsub", "pbs-commands"),
        ),
        Server(
            "sshd (netns)",
            "PYCREW_REQUIRE_NETNS",
            (
                ("tests/engines/test_ssh.py", "remote"),
                ("tests/operations/test_logging.py", "remote"),
            ),
            ("openssh-server",),
        ),
        Server(
            "Chromium (headless)",
            "PYCREW_REQUIRE_BROWSER",
            (
                ("tests/operations/test_dashboard.py", "name:the_page_shows"),
                ("tests/operations/test_dashboard.py", "name:page_over_a_big_run"),
                ("tests/operations/test_dashboard.py", "name:cancel_button"),
            ),
            ("a real browser is needed",),
        ),
        Server(
            "network namespaces",
            "PYCREW_REQUIRE_NETNS",
            (("tests/dispatcher/test_partition.py", "link"),),
            ("network namespaces", "iproute2"),
        ),
    ]


class ServerReport:
    """Collects, per server, how its tests ended; prints the block at the end."""

    def __init__(self) -> None:
        self.servers = _servers()
        self.owner: dict[str, Server] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            module = item.nodeid.split("::", 1)[0]
            fixtures = list(getattr(item, "fixturenames", ()))
            for server in self.servers:
                if server.owns(module, item.name, fixtures):
                    self.owner[item.nodeid] = server
                    break

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        reason = _reason(report) if report.skipped or report.failed else ""
        server = self.owner.get(report.nodeid)
        if server is None and report.skipped:
            # a test skipped for a server's reason is that server's, wherever it is
            server = next(
                (s for s in self.servers if any(m in reason for m in s.reason_marks)), None
            )
        if server is None:
            return
        if report.skipped:
            server.skipped += 1
            server.reasons[reason] = server.reasons.get(reason, 0) + 1
        elif report.failed:
            server.failed += 1
            if reason:  # the server is required, and missing
                server.reasons[reason] = server.reasons.get(reason, 0) + 1
        elif report.when == "call":
            server.ran += 1

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        write = terminalreporter.write_line
        terminalreporter.section("real servers")
        for server in self.servers:
            write(f"  {server.label:<20}{self._state(server)}")
        if any(server.reasons for server in self.servers):
            for line in HOW:
                write(line)

    @staticmethod
    def _state(server: Server) -> str:
        required = os.environ.get(server.require) == "1"
        if server.reasons:
            reason, _ = max(server.reasons.items(), key=lambda kv: kv[1])
            if server.failed and required:
                return f"MISSING ({server.require}=1): {server.failed} tests failed: {reason}"
            used = f"used by {server.ran} tests, " if server.ran else ""
            return f"{used}skipped {server.skipped} tests: {reason}"
        if server.ran or server.failed:
            return f"used: {server.ran + server.failed} tests"
        return "not used: none of its tests in this run"


def _reason(report: pytest.TestReport) -> str:
    """A skip's reason, or the missing server's problem of a ``PYCREW_REQUIRE_*`` failure."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
        return text.removeprefix("Skipped: ").strip()
    crash = getattr(longrepr, "reprcrash", None)
    message = str(getattr(crash, "message", "") or "")
    if "PYCREW_REQUIRE_" in message and ", but " in message:
        return message.split(", but ", 1)[1].strip()
    return ""


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pycrew-servers"):
        config.pluginmanager.register(ServerReport(), "pycrew-servers")
