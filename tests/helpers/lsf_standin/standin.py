"""Stand-ins for LSF's bsub, bjobs and bkill: no LSF can run here.

They keep to the formats pycrew relies on (LSF's documented ones) and run
each job, or each element of a job array, as a local process in a session of
its own. State lives in the folder named by ``$LSF_STANDIN_STATE``.

    bsub  < script         "Job <N> is submitted to queue <normal>."
    bjobs -a|-u USER -noheader -o "jobid jobindex stat exit_code job_name delimiter='|'"
    bkill ID [ID ...]      ID: N, or N[I] for one element
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ.get("LSF_STANDIN_STATE", "/tmp/lsf-standin"))


def _next_id() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    counter = STATE / "counter"
    value = int(counter.read_text()) + 1 if counter.exists() else 100
    counter.write_text(str(value))
    return value


def _fill(pattern: str, job: int, index: int) -> str:
    return pattern.replace("%J", str(job)).replace("%I", str(index))


def bsub() -> int:
    script = sys.stdin.read()
    options: dict[str, str] = {}
    for line in script.splitlines():
        found = re.match(r"#BSUB\s+(-\w+)\s+(.*)$", line)
        if found:
            options[found[1]] = found[2].strip().strip('"')
    name = options.get("-J", "job")
    array = re.match(r"^(.*)\[(\d+)-(\d+)\]$", name)
    indices = range(int(array[2]), int(array[3]) + 1) if array else [0]
    base = array[1] if array else name
    job = _next_id()
    path = STATE / f"{job}.sh"
    path.write_text(script)
    for index in indices:
        env = dict(os.environ, LSB_JOBID=str(job))
        if array:
            env["LSB_JOBINDEX"] = str(index)
        rc = STATE / f"{job}.{index}.rc"
        out = _fill(options.get("-o", os.devnull), job, index)
        err = _fill(options.get("-e", os.devnull), job, index)
        with open(out, "ab") as stdout, open(err, "ab") as stderr:
            process = subprocess.Popen(
                ["sh", "-c", f'sh "$0"; echo $? > "{rc}"', str(path)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        record = {"job": job, "index": index, "pid": process.pid, "name": base}
        (STATE / f"{job}.{index}.json").write_text(json.dumps(record))
    print(f"Job <{job}> is submitted to default queue <normal>.")
    return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def bjobs() -> int:
    for path in sorted(STATE.glob("*.json")):
        record = json.loads(path.read_text())
        job, index = record["job"], record["index"]
        rc = STATE / f"{job}.{index}.rc"
        if rc.exists():
            code = int(rc.read_text().strip() or 0)
            state, shown = ("DONE", "-") if code == 0 else ("EXIT", str(code))
        elif _alive(record["pid"]):
            state, shown = "RUN", "-"
        else:  # killed: no exit status written
            state, shown = "EXIT", "130"
        name = f"{record['name']}[{index}]" if index else record["name"]
        print(f"{job}|{index}|{state}|{shown}|{name}")
    return 0


def bkill(ids: list[str]) -> int:
    for wanted in ids:
        found = re.match(r"^(\d+)(?:\[(\d+)\])?$", wanted)
        if found is None:
            print(f"{wanted}: Illegal job ID", file=sys.stderr)
            return 255
        for path in STATE.glob(f"{found[1]}.*.json"):
            record = json.loads(path.read_text())
            if found[2] is None or int(found[2]) == record["index"]:
                with contextlib.suppress(OSError):
                    os.killpg(record["pid"], signal.SIGKILL)
        print(f"Job <{wanted}> is being terminated")
    return 0


def main() -> int:
    command = os.path.basename(sys.argv[1])
    if command == "bsub":
        return bsub()
    if command == "bjobs":
        return bjobs()
    if command == "bkill":
        return bkill(sys.argv[2:])
    print(f"unknown stand-in {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
