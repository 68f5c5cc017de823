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

import sys


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
    from ._worker import main as worker_main

    if worker_id:
        # the command line is the contract: its id wins over an inherited one
        os.environ[_frames.WORKER_ENV] = worker_id
    return worker_main(address, tls)
