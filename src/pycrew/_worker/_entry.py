"""How a worker process starts: ``python -m pycrew worker`` read without argparse.

```
 python -m pycrew worker --address A [--id I] [--tls] [--stdin-environment] [--template]
   └─► worker_fast_path(argv) ─► run_worker(address, id, tls) ─► _worker.main
          └─ --template ─► _template.serve(): fork workers on request
```

The command line is the only contract between a launcher and a worker; the
secret comes in the environment, or on stdin for workers started over ssh.
"""

from __future__ import annotations

import contextlib
import sys

TYPE_CHECKING = False  # typing is slow to import, and every worker starts here
if TYPE_CHECKING:
    from typing import Any

#: multiprocessing's authkey of the controller's process, hex (local workers only)
AUTHKEY_ENV = "PYCREW_AUTHKEY"


def worker_fast_path(argv: list[str]) -> int | None:
    """``worker --address A [--id I] [--tls]`` without argparse, which is slow to import.

    Worker start-up time is cold-start time for every task of a fresh
    worker; anything unusual falls back to the full parser.
    """
    if not argv or argv[0] != "worker":
        return None
    options: dict[str, str | bool] = {}
    rest = argv[1:]
    while rest:
        flag = rest.pop(0)
        if flag == "--template":
            from ._template import serve

            return serve()
        if flag == "--tls":
            options["tls"] = True
        elif flag == "--stdin-environment":
            options["stdin"] = True
        elif flag in ("--address", "--id") and rest:
            options[flag[2:]] = rest.pop(0)
        else:
            return None
    address = options.get("address")
    if not isinstance(address, str):
        return None
    if options.get("stdin"):
        address = read_environment(address)
    return run_worker(address, str(options.get("id", "")), bool(options.get("tls", False)))


def read_environment(address: str) -> str:
    """A worker started over ssh: its environment (the secret with it) comes on stdin.

    One JSON line, ``{"env": {...}, "address": "host:port"}``: never on a
    command line, where ``ps`` on either host would show it. The address, when
    given, replaces ``--address`` (a tunnel's port is known only once ssh runs).
    """
    import json
    import os

    line = sys.stdin.buffer.readline()
    sys.stdin.close()
    try:
        sent = json.loads(line)
        os.environ.update({str(k): str(v) for k, v in sent.get("env", {}).items()})
        return str(sent.get("address") or address)
    except (ValueError, AttributeError):
        return address  # the worker then says what it lacks (no secret)


def run_worker(address: str, worker_id: str, tls: bool) -> int:
    import os

    from .._wire import _frames
    from ._dial import _take_env
    from ._worker import main as worker_main

    if worker_id:
        # the command line is the contract: its id wins over an inherited one
        os.environ[_frames.WORKER_ENV] = worker_id
    adopt_authkey(_take_env(AUTHKEY_ENV))
    return worker_main(address, tls)


def adopt_authkey(key_hex: str) -> None:
    """Take the controller process's ``multiprocessing`` authkey as this process's own.

    Children of multiprocessing and loky inherit their parent's key, so the
    proxies of a ``multiprocessing.Manager()`` made there connect from them;
    a local worker gets it in ``$PYCREW_AUTHKEY`` (never on its command
    line). Most tasks never touch multiprocessing, and importing it costs a
    cold start a few milliseconds: unless it is loaded already, the key is
    set the moment ``multiprocessing.process`` is first imported.
    """
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        return
    if not key:
        return
    loaded = sys.modules.get(_MP_PROCESS)
    if loaded is not None:
        _set_authkey(loaded, key)
    else:
        sys.meta_path.insert(0, _AuthkeyFinder(key))


_MP_PROCESS = "multiprocessing.process"


def _set_authkey(module: Any, key: bytes) -> None:
    module.current_process().authkey = key


class _AuthkeyFinder:
    """Finds nothing itself: sets the key once ``multiprocessing.process`` has run, then leaves."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != _MP_PROCESS:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        from importlib.util import find_spec

        spec = find_spec(fullname)
        loader: Any = spec.loader if spec is not None else None
        run = getattr(loader, "exec_module", None)
        if run is None:
            return spec
        key = self.key

        def exec_module(module: Any) -> None:
            run(module)
            _set_authkey(module, key)

        loader.exec_module = exec_module  # this spec's own loader object
        return spec
