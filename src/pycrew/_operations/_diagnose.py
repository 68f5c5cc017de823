"""Why a launched worker never connected: its last words, read and put in plain words.

```
 worker exits before connecting ─► scaler: launcher.failure_output(handle)  (the tail of its stderr)
                                      └─► probable_cause(text, code) ─► LaunchError:
                                            which worker, the cause and its fix, its last lines
```

The patterns below are what the usual failures print: Python's own message
for a module it cannot find, the worker's "could not join the controller"
line (``_worker.main``), a shell's complaint about a missing interpreter,
ssh's refusals (a host key, a login), and SLURM's notes about limits.
Anything else is quoted as it is.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

from .._errors import LaunchError
from .._version import __version__

#: how much of the end of a worker's error output is read
TAIL_BYTES = 16 << 10
#: how many of its last lines a LaunchError quotes, and how long each may be
QUOTED_LINES = 10
LINE_CHARS = 240


@dataclass(frozen=True)
class Cause:
    """The probable cause of a failed launch.

    Attributes:
        text: what went wrong and what to do about it, in plain words.
        certain: launching again would fail the same way, so the user
            hears of it at the first failure rather than the second.
    """

    text: str
    certain: bool


def read_tail(path: str | os.PathLike[str], start: int = 0) -> str | None:
    """The last ``TAIL_BYTES`` of a file from offset ``start`` on; None if it is missing."""
    try:
        with open(path, "rb") as file:
            end = file.seek(0, os.SEEK_END)
            file.seek(max(start, end - TAIL_BYTES) if end >= start else 0)
            data = file.read(TAIL_BYTES)
    except FileNotFoundError:
        return None
    return data.decode("utf-8", "replace")


def last_lines(text: str, count: int = QUOTED_LINES) -> list[str]:
    """The last ``count`` non-blank lines of ``text``, each cut to ``LINE_CHARS``."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [
        line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 3] + "..."
        for line in lines[-count:]
    ]


def how_it_ended(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


_NO_PYCREW = re.compile(r"^(?:(?P<python>.*?): )?No module named '?pycrew'?$", re.M)
_NO_MODULE = re.compile(r"No module named '(?P<module>[\w.]+)'")
# said by either side, whichever noticed first
_VERSIONS = re.compile(
    r"the (?P<side>worker|controller) runs (?P<what>pycrew|Python|wire protocol) "
    r"'?(?P<first>[^' ]*)'? and the (?:worker|controller) '?(?P<second>[^' ]*)'?"
)
_REFUSED = re.compile(r"the controller refused us: (?P<reason>.+)$", re.M)
_NO_SECRET = re.compile(r"no valid secret in \$PYCREW_SECRET")
_TLS = re.compile(
    r"could not join the controller at \S+: .*?(?P<reason>certificate verify failed.*)$", re.M
)
_JOIN = re.compile(r"could not join the controller at (?P<address>\S+): (?P<reason>.+)$", re.M)
_UNREACHABLE = re.compile(
    r"Connection refused|No route to host|Network is unreachable|timed out|"
    r"Name or service not known|Temporary failure in name resolution|nodename nor servname",
    re.I,
)
# dash: "slurm_script: 6: exec: /x/python: not found"; bash: "...: line 6: /x/python: No such ..."
_NO_INTERPRETER = re.compile(
    r"^\S+: (?:line )?\d+: (?:exec: )?(?P<path>.+?): "
    r"(?P<why>not found|No such file or directory|Permission denied)$",
    re.M,
)
# OpenSSH's own words when it cannot open a session (the worker never ran)
_SSH_HOST_KEY = re.compile(
    r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
    r"No \S+ host key is known for|Host key for \S+ has changed"
)
_SSH_LOGIN = re.compile(r"Permission denied \((?P<methods>[\w,-]+)\)")
_SSH_NAME = re.compile(r"ssh: Could not resolve hostname (?P<host>[^:\s]+)")
_SSH_CONNECT = re.compile(
    r"ssh: connect to host (?P<host>\S+) port (?P<port>\d+): (?P<reason>.+)$", re.M
)
_TIME_LIMIT = re.compile(r"CANCELLED AT \S+ DUE TO TIME LIMIT")
_MEMORY = re.compile(r"oom[-_ ]kill|Out Of Memory|Exceeded job memory limit|MemoryError", re.I)
_LAST_ERROR = re.compile(r"^(?P<error>[A-Za-z_][\w.]*(?:Error|Exception)\b.*)$", re.M)


def probable_cause(text: str | None, code: int | None) -> Cause:
    """What most likely kept a worker from connecting, from its last output and exit code.

    ``text`` is None when the launcher keeps no output of its workers.
    """
    if text is None:
        return Cause(
            "its launcher keeps no output of its workers, so pycrew cannot say why; "
            "run the worker's command by hand where it ran to see what it prints",
            certain=False,
        )
    cause = _ssh_cause(text)
    if cause is not None:
        return cause
    found = _NO_PYCREW.search(text)
    if found is not None:
        python = (found["python"] or "").strip()
        where = f" ({python})" if python else ""
        return Cause(
            f"pycrew is not installed for the Python the workers run{where}: install "
            f"pycrew {__version__} there, or pass python= an interpreter that has it",
            certain=True,
        )
    found = _VERSIONS.search(text)
    if found is not None:
        what, theirs, ours = found["what"], found["first"], found["second"]
        if found["side"] == "controller":
            theirs, ours = ours, theirs
        fix = {
            "pycrew": f"install pycrew {ours} for the workers' Python, or pass python= "
            "an interpreter that has it",
            "Python": f"pass python= a Python {ours} interpreter that has pycrew {__version__}",
            "wire protocol": f"install pycrew {__version__} for the workers' Python",
        }[what]
        return Cause(
            f"version mismatch: the workers run {what} {theirs} and the controller {ours}: {fix}",
            certain=True,
        )
    found = _NO_MODULE.search(text)
    if found is not None:
        return Cause(
            f"the workers' Python cannot import {found['module']!r}, which pycrew needs: "
            f"install pycrew {__version__} there with its dependencies",
            certain=True,
        )
    if _NO_SECRET.search(text):
        return Cause(
            "the worker found no secret in its environment: it must inherit the "
            "environment it is launched with (for SLURM jobs, sbatch's: no --export=NONE, "
            "and no script_lines that clear PYCREW_SECRET)",
            certain=True,
        )
    found = _TLS.search(text)
    if found is not None:
        return Cause(
            f"the worker could not verify the controller's TLS certificate "
            f"({found['reason'].strip()}): the certificate must name the address the "
            "workers dial (host=)",
            certain=True,
        )
    found = _JOIN.search(text)
    if found is not None and _UNREACHABLE.search(found["reason"]):
        reason = found["reason"].strip()
        return Cause(
            f"the worker could not reach the controller at {found['address']} ({reason}): "
            "pass host= an address of this machine that the workers' network reaches, "
            "and make sure no firewall blocks the port",
            certain="timed out" not in reason,
        )
    found = _REFUSED.search(text)
    if found is not None:
        return Cause(f"the controller refused the worker: {found['reason'].strip()}", certain=True)
    found = _NO_INTERPRETER.search(text)
    if found is not None:
        path = found["path"].strip()
        if found["why"] == "Permission denied":
            return Cause(
                f"{path} cannot be run where the worker ran (permission denied): "
                "pass python= an executable Python interpreter",
                certain=True,
            )
        return Cause(
            f"the interpreter {path} was not found where the worker ran: pass python= "
            "the path of a Python there that has pycrew (or make it available with "
            "script_lines, such as module load)",
            certain=True,
        )
    if _TIME_LIMIT.search(text):
        return Cause(
            "the job reached its time limit before its worker connected: raise time_minutes=",
            certain=False,
        )
    if _MEMORY.search(text):
        return Cause(
            "the worker ran out of memory before it connected: ask for more "
            "(memory_gigabytes_per_cpu= or memory_gigabytes_required= for SLURM jobs)",
            certain=False,
        )
    if code is not None and code < 0:
        return Cause(
            f"the worker {how_it_ended(code)} before it connected: out of memory, "
            "a limit of its machine or cluster, or someone ended it",
            certain=False,
        )
    if not text.strip():
        return Cause(
            "it wrote nothing to its error output: what stopped it lies outside the "
            "worker (the launcher's or scheduler's records may say more)",
            certain=False,
        )
    errors = _LAST_ERROR.findall(text)
    if errors:
        return Cause(f"the worker failed as it started: {errors[-1].strip()}", certain=False)
    return Cause("its last lines may say why", certain=False)


def stated_cause(message: str, code: int | None) -> Cause:
    """A launcher's own words for why a worker failed: the ``LaunchError`` its
    ``failure_output`` raised. The message is the cause; it is certain when it
    says what would be certain in the worker's output (ssh refusing a host's
    key, say), so that the user hears of it at the first failure.
    """
    return Cause(message, certain=probable_cause(message, code).certain)


def _ssh_cause(text: str) -> Cause | None:
    """ssh could not start the worker: no retry will do better, except after a time-out."""
    if _SSH_HOST_KEY.search(text):
        return Cause(
            "ssh refused the host's key (Host key verification failed: the key is unknown "
            "or has changed): check the host's key, then add it to the known_hosts file "
            "ssh reads (known_hosts=, or ~/.ssh/known_hosts)",
            certain=True,
        )
    found = _SSH_LOGIN.search(text)
    if found is not None:
        return Cause(
            f"ssh could not log in (Permission denied ({found['methods']})): give a key the "
            "host accepts (identity=), one that needs no passphrase typed in",
            certain=True,
        )
    found = _SSH_NAME.search(text)
    if found is not None:
        return Cause(f"ssh could not resolve the host name {found['host']}", certain=True)
    found = _SSH_CONNECT.search(text)
    if found is not None:
        reason = found["reason"].strip()
        return Cause(
            f"ssh could not connect to {found['host']} port {found['port']} ({reason}): "
            "check the host, its sshd and the port (ssh_port=)",
            certain="timed out" not in reason,
        )
    return None


def launch_error(
    worker: str, where: str, code: int | None, text: str | None, cause: Cause
) -> LaunchError:
    """The error the user sees: which worker, the probable cause, then its last lines."""
    head = f"worker {worker}{f' ({where})' if where else ''} {how_it_ended(code)}"
    message = f"{head} before it connected. Probable cause: {cause.text}."
    lines = last_lines(text or "")
    if lines:
        message += "\nIts last lines of error output:\n" + "\n".join(f"    {x}" for x in lines)
    return LaunchError(message)
