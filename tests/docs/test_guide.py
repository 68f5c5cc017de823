"""The security guide, docs/security.md: every command in it runs and prints what it shows.

Fenced blocks tagged ``bash`` or ``sh`` are shell steps, ``python`` blocks are
Python steps, and ``text``/``console`` blocks are shown to readers but not run.
All steps run in document order in one empty folder. A ``text`` block that
follows a step with nothing but blank lines between them is that step's
expected output, compared as doctest does with ELLIPSIS (``...`` matches
anything).

The worked example's main path is the headless one (an HPC login node has
no keychain): the key's password in a file only its owner reads, or in an
environment variable. Those steps run with ``keyring``'s failing backend, the
one a headless machine gets, so that none of them can lean on a keychain.
The optional steps that keep the password in the system keychain (those that
mention ``keyring``) run with the file-backed ``FileKeyring`` from
``tests/helpers/guide_keyring.py`` instead, since a CI machine has no keychain.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "security.md"
#: the longest one step may take; the whole guide takes a few seconds
STEP_SECONDS = 60
SHELL = ("bash", "sh")
HEADLESS_BACKEND = "keyring.backends.fail.Keyring"
FILE_BACKEND = "tests.helpers.guide_keyring.FileKeyring"
SHOWN = ("text", "console")
#: a fenced block: its indentation, info string and body (fences may be indented)
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass
class Step:
    kind: str
    code: str
    line: int
    expected: str | None = None
    stdout: str = ""


def guide_steps(text: str) -> list[Step]:
    """The guide's runnable blocks in order, each with its expected output if it shows one."""
    steps: list[Step] = []
    previous: tuple[Step, int] | None = None
    for match in FENCE.finditer(text):
        info = match["info"].strip().split(" ")[0].lower()
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        line = text.count("\n", 0, match.start()) + 1
        known = (*SHELL, "python", *SHOWN)
        assert info in known, f"{GUIDE.name}:{line}: tag the block as one of {known}"
        if info in SHOWN:
            if previous is not None and not text[previous[1] : match.start()].strip():
                previous[0].expected = body
            previous = None
            continue
        step = Step("bash" if info in SHELL else "python", body, line)
        steps.append(step)
        previous = (step, match.end())
    return steps


def step_env(folder: Path, keyring_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCREW_")}
    # the venv's scripts (keyring) first, and the repository root on PYTHONPATH
    # (conftest puts it there too) so that tests.helpers.guide_keyring imports
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # what a headless machine has: keyring fails with NoKeyringError
    env["PYTHON_KEYRING_BACKEND"] = HEADLESS_BACKEND
    env["PYCREW_GUIDE_KEYRING"] = str(keyring_file)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HOME"] = str(folder)
    return env


def run_step(step: Step, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if step.kind == "bash":
        command = ["bash", "-euo", "pipefail", "-c", step.code]
    else:
        command = [sys.executable, "-c", step.code]
    return subprocess.run(
        command,
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STEP_SECONDS,
        # no controlling terminal: a command that would prompt fails instead of waiting
        start_new_session=True,
        check=False,
    )


def matches(expected: str, got: str) -> tuple[bool, str]:
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS
    if checker.check_output(expected, got, flags):
        return True, ""
    return False, checker.output_difference(doctest.Example("", expected), got, flags)


def test_every_command_in_the_security_guide_runs(tmp_path: Path) -> None:
    assert shutil.which("openssl"), "the guide's example needs the openssl command line"
    steps = guide_steps(GUIDE.read_text())
    assert sum(s.kind == "bash" for s in steps) >= 5
    assert sum(s.kind == "python" for s in steps) >= 4
    keyring_file = tmp_path / "keyring.json"
    headless = step_env(tmp_path, keyring_file)
    with_keychain = {**headless, "PYTHON_KEYRING_BACKEND": FILE_BACKEND}
    optional = [i for i, s in enumerate(steps) if "keyring" in s.code]
    assert optional, "the guide shows the keychain as an option"
    # the headless path comes first, whole: every step before the keychain's
    assert optional == list(range(optional[0], len(steps)))
    streams: list[str] = []
    password = ""
    for index, step in enumerate(steps):
        if index == optional[0]:
            # the headless path is done: the password is in a file of its owner's only
            password_file = tmp_path / "server.pass"
            assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
            password = password_file.read_text().strip()
        env = with_keychain if index in optional else headless
        done = run_step(step, tmp_path, env)
        streams += [done.stdout, done.stderr]
        where = f"{GUIDE.name}:{step.line} ({step.kind})"
        report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        assert done.returncode == 0, f"{where} exited with {done.returncode}\n{report}"
        if step.kind == "python":
            assert not done.stderr, f"{where} wrote to stderr\n{report}"
        if step.expected is not None:
            same, difference = matches(step.expected, done.stdout)
            assert same, f"{where} printed other output than the guide shows\n{difference}"
        step.stdout = done.stdout

    # the worked example ran tasks over custom TLS without a keychain, the
    # password read from the file, then from an environment variable
    tls = [s for s in steps[: optional[0]] if "pycrew.TLS(" in s.code]
    assert len(tls) == 2
    from_file, from_env = tls
    assert from_file.kind == "python"
    assert "password=key_password" in from_file.code
    assert from_file.expected is not None
    assert from_file.stdout.startswith("tls+tcp://127.0.0.1:")
    assert "'success'" in from_file.stdout
    assert 'password_env="PYCREW_KEY_PASSWORD"' in from_env.code
    assert from_env.stdout == "1024\nNone\n"  # the worker never saw the variable
    # and, optionally, with the password in the keychain
    keychain = [s for s in steps[optional[0] :] if "pycrew.TLS(" in s.code]
    assert len(keychain) == 1
    assert keychain[0].stdout == "81\n"

    # the key is encrypted and private; its password moved to the keychain and
    # is nowhere else, in no file and no output
    key = tmp_path / "server.key"
    assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(password) >= 32
    assert json.loads(keyring_file.read_text())["pycrew"]["tls-key"] == password
    assert stat.S_IMODE(keyring_file.stat().st_mode) == 0o600
    assert not (tmp_path / "server.pass").exists()
    holders = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and path != keyring_file and password.encode() in path.read_bytes()
    ]
    assert holders == []
    assert not any(password in stream for stream in streams)


def test_the_headless_steps_run_where_keyring_has_no_backend(tmp_path: Path) -> None:
    """The environment of the headless steps is a headless machine's: keyring fails there."""
    env = step_env(tmp_path, tmp_path / "keyring.json")
    done = run_step(Step("bash", "printf 'x\\n' | keyring set pycrew tls-key", 0), tmp_path, env)
    assert done.returncode != 0
    assert "keyring.errors.NoKeyringError" in done.stderr
    assert not (tmp_path / "keyring.json").exists()
