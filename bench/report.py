"""bench.py's report: headline figures per system, the markdown tables, the targets."""

from __future__ import annotations

import statistics
from typing import Any

from adapters import PYCREW_KEYS

US = "\u00b5s"  # "µs", spelled as an escape so ruff's confusable check stays quiet
TIMES = "\u00d7"
GE, LE = "\u2265", "\u2264"
PING_BYTES = 64

# The same-run ratios of pycrew to each peer: summary key, column title, and
# whether a smaller value is better ("time": peer / pycrew) or a larger one
# ("rate": pycrew / peer), so that above 1 always means pycrew is better.
RATIOS: tuple[tuple[str, str, str], ...] = (
    ("rt_median_us", "round trip", "time"),
    ("rt_p90_us", "round trip p90", "time"),
    ("rt_p99_us", "round trip p99", "time"),
    ("tasks_per_s", "tasks/s", "rate"),
    ("rt_script_us", "script fn: round trip", "time"),
    ("tasks_per_s_script", "script fn: tasks/s", "rate"),
    ("map_tasks_per_s", "map tasks/s", "rate"),
    ("mb_per_s", "MB/s in", "rate"),
    ("mb_per_s_out", "MB/s in+out", "rate"),
    ("cpu_us_per_task", "controller CPU/task", "time"),
    ("million_s", "many tasks: s", "time"),
    ("million_peak_mb", "many tasks: peak RSS", "time"),
    ("cold_ms", "cold start", "time"),
)

# Targets for pycrew: summary key -> ("le" or "ge", target with tls="none", with TLS)
TARGETS = {
    "rt_median_us": ("le", 120.0, 138.0),
    "tasks_per_s": ("ge", 30_000.0, 25_000.0),
    "mb_per_s": ("ge", 3000.0, 1400.0),
    "cold_ms": ("le", 40.0, 40.0),
}


def is_tracker(proc_info: dict[str, Any]) -> bool:
    return "resource_tracker" in proc_info.get("cmdline", "")


# The names of the measurements (keys of a child's JSON) as the report writes them.
FIGURE_NAMES = {
    "round_trip": "round trip",
    "throughput": "tasks/s",
    "round_trip_script": "script fn: round trip",
    "throughput_script": "script fn: tasks/s",
    "map": "map",
    "payload": "payload in",
    "payload_out": "payload in+out",
    "million": "many tasks",
}


def dashes(entry: dict[str, Any]) -> dict[str, str]:
    """Figure -> why this system has none: what it cannot do, what was not run, what failed."""
    out = dict(entry.get("cannot") or {})
    if entry.get("million_skipped"):
        out["million"] = "not run: " + entry["million_skipped"]
    for part in (entry.get("warm", {}), entry.get("million", {})):
        for name, text in (part.get("errors") or {}).items():
            out.setdefault(name, "failed: " + text.splitlines()[0][:160])
    return out


def summarize_system(entry: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one system (None where a measurement failed)."""
    warm = entry.get("warm", {})
    colds = [c for c in entry.get("cold", []) if "cold_s" in c and not c.get("errors")]

    def med(key: str) -> float | None:
        xs = [c[key] for c in colds if key in c]
        return statistics.median(xs) if xs else None

    cold_s, import_s = med("cold_s"), med("import_s")
    exec_s, shut_s = med("exec_to_first_s"), med("shutdown_s")
    million = entry.get("million", {})
    parts = [warm, *entry.get("cold", []), *([million] if million else [])]
    lingering = [p for part in parts for p in part.get("alive_after_shutdown", [])]
    trackers = [p for p in lingering if is_tracker(p)]
    return {
        "rt_median_us": warm.get("round_trip", {}).get("median"),
        "rt_p90_us": warm.get("round_trip", {}).get("p90"),
        "rt_n": warm.get("round_trip", {}).get("n"),
        "tasks_per_s": warm.get("throughput", {}).get("tasks_per_s"),
        "submit_per_s": warm.get("throughput", {}).get("submit_per_s"),
        "rt_script_us": warm.get("round_trip_script", {}).get("median"),
        "tasks_per_s_script": warm.get("throughput_script", {}).get("tasks_per_s"),
        "submit_per_s_script": warm.get("throughput_script", {}).get("submit_per_s"),
        "rt_p99_us": warm.get("round_trip", {}).get("p99"),
        "cpu_us_per_task": warm.get("throughput", {}).get("cpu_us_per_task"),
        "map_tasks_per_s": warm.get("map", {}).get("tasks_per_s"),
        "map_n": warm.get("map", {}).get("n"),
        "mb_per_s": warm.get("payload", {}).get("mb_per_s"),
        "mb_per_s_out": warm.get("payload_out", {}).get("mb_per_s"),
        "million_n": million.get("n"),
        "million_s": million.get("seconds"),
        "million_peak_mb": million.get("peak_mb"),
        "million_base_mb": million.get("base_mb"),
        "dashes": dashes(entry),
        "payload_median_s": warm.get("payload", {}).get("median"),
        "cold_ms": cold_s * 1e3 if cold_s is not None else None,
        "import_ms": import_s * 1e3 if import_s is not None else None,
        "exec_to_first_ms": exec_s * 1e3 if exec_s is not None else None,
        "cold_shutdown_ms": shut_s * 1e3 if shut_s is not None else None,
        "cold_ok": len(colds),
        "cold_runs": len(entry.get("cold", [])),
        "worker_pids": warm.get("warmup", {}).get("worker_pids"),
        "alive_after_shutdown": len(lingering) - len(trackers),
        "trackers_after_shutdown": len(trackers),
        "ended_by_parent": sum(len(part.get("ended_by_parent", [])) for part in parts),
    }


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "\u2013"
    return f"{x:,.{digits}f}"


def with_target(key: str, metric: str, value: float | None, digits: int = 0) -> str:
    text = fmt(value, digits)
    if key not in PYCREW_KEYS or metric not in TARGETS:
        return text
    op, plain, tls = TARGETS[metric]
    target = tls if key == "pycrew-tls" else plain
    sign = LE if op == "le" else GE
    if value is None:
        return f"{text} (target {sign} {target:,.0f})"
    met = value <= target if op == "le" else value >= target
    return f"{text} (target {sign} {target:,.0f}: {'met' if met else 'MISSED'})"


def ratio(num: float | None, den: float | None) -> str:
    if not num or not den:
        return "\u2013"
    return f"{num / den:.2f}"


def fmt_ratio(x: float | None) -> str:
    """Two decimals, or two significant digits where that would print 0.00."""
    if x is not None and 0 < x < 0.1:
        return f"{x:.2g}"
    return fmt(x, 2)


def better_ratio(kind: str, pycrew: float | None, peer: float | None) -> float | None:
    """pycrew against a peer, above 1 when pycrew is better (see RATIOS)."""
    if not pycrew or not peer:
        return None
    return peer / pycrew if kind == "time" else pycrew / peer


def render(run: dict[str, Any]) -> str:
    meta, systems = run["meta"], run["systems"]
    floor = run.get("floor", {})
    floor_us = floor.get("blocking", {}).get("median")
    lines: list[str] = []
    add = lines.append
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    load = ", ".join(f"{x:.2f}" for x in meta["loadavg_start"])
    add(
        f"Run {meta['date']}{' (--quick)' if run['quick'] else ''}"
        f"{''.join(f' --set {item}' for item in run.get('set', []))} | {meta['usable_cpus']} cores "
        f"({meta['cpu']}), {meta['mem_gib']} GiB | Python {meta['python']} | "
        f"{meta['n_workers']} workers | load avg at start {load}"
    )
    add("")
    add(f"Versions: {versions}")
    add("")
    cfg = run["config"]
    add(
        f"Counts: round trip {cfg['rt_n']} (after {cfg['rt_warmup']} untimed), throughput "
        f"{cfg['tp_n']} tasks {TIMES} {cfg['tp_reps']}, payload {cfg['pl_mb']:g} MB {TIMES} "
        f"{cfg['pl_reps']} (+1 warm-up), cold start {TIMES} {cfg['cold_runs']}."
    )
    add("")
    add(
        f"| system | round trip median {US} | p90 {US} | p99 {US} | {TIMES} floor | tasks/s | "
        f"{cfg['pl_mb']:g} MB in: MB/s | cold start ms | import ms | worker pids ok |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for key, entry in systems.items():
        if "skipped" in entry:
            add(f"| {entry['label']} | {entry['skipped']} |  |  |  |  |  |  |  |  |")
            continue
        s = entry["summary"]
        pids = s["worker_pids"] or []
        answered = entry.get("warm", {}).get("warmup", {}).get("all_workers_answered", False)
        pids_ok = "n/a" if answered is None else f"{len(set(pids))}/{meta['n_workers']}"
        add(
            f"| {entry['label']} | {with_target(key, 'rt_median_us', s['rt_median_us'])} | "
            f"{fmt(s['rt_p90_us'])} | {fmt(s['rt_p99_us'])} | "
            f"{ratio(s['rt_median_us'], floor_us)} | "
            f"{with_target(key, 'tasks_per_s', s['tasks_per_s'])} | "
            f"{with_target(key, 'mb_per_s', s['mb_per_s'])} | "
            f"{with_target(key, 'cold_ms', s['cold_ms'])} | {fmt(s['import_ms'])} | {pids_ok} |"
        )
    add("")
    add_many_tasks(lines, run)
    if floor.get("blocking"):
        b, bp = floor["blocking"], floor.get("busy_poll", {})
        add(
            f"Raw floor, same run: loopback TCP ping-pong of {PING_BYTES} B between two "
            f"processes, round trip median {fmt(b['median'], 1)} {US} (p90 {fmt(b['p90'], 1)} "
            f"{US}, n={b['n']}); with both ends busy-polling {fmt(bp.get('median'), 1)} {US}. "
            f"'{TIMES} floor' = round trip median / blocking floor."
        )
        pair = floor.get("pair")
        if pair:
            add("")
            add(
                f"The same ping-pong through a Unix socket pair (what a local pycrew worker "
                f"talks through): {fmt(pair['median'], 1)} {US} (p90 {fmt(pair['p90'], 1)} "
                f"{US}, n={pair['n']})."
            )
        end = run.get("floor_end", {})
        if end.get("blocking"):
            add("")
            add(
                f"Floor re-measured at the end of the run: {fmt(end['blocking']['median'], 1)} "
                f"{US}, busy-polling {fmt(end.get('busy_poll', {}).get('median'), 1)} {US} "
                "(the blocking figure is much lower when the CPUs are awake)."
            )
    else:
        add(f"Raw floor: not measured ({_errors_line(floor)})")
    add("")
    add_shared_memory(lines, run)

    pycrew = [k for k in PYCREW_KEYS if k in systems and "summary" in systems[k]]
    peers = [k for k in systems if k not in PYCREW_KEYS and "summary" in systems[k]]
    if pycrew and peers:
        add(
            "pycrew vs peers, same run. **Every ratio > 1 means pycrew is better**: "
            "times, memory and CPU are peer / pycrew; tasks/s and MB/s are pycrew / peer."
        )
        add("")
        add("| pycrew | peer | " + " | ".join(title for _, title, _ in RATIOS) + " |")
        add("|---|---|" + "---:|" * len(RATIOS))
        for pk in pycrew:
            ps = systems[pk]["summary"]
            for qk in peers:
                qs = systems[qk]["summary"]
                cells = [
                    fmt_ratio(better_ratio(kind, ps[metric], qs[metric]))
                    for metric, _, kind in RATIOS
                ]
                add(f"| {systems[pk]['label']} | {systems[qk]['label']} | {' | '.join(cells)} |")
        add("")
        add(
            "A dash: one of the two has no such figure (below, why). A map ratio compares "
            "rates, also where the slower system mapped fewer tasks (the counts are above)."
        )
        add("")

    add("Detail (medians):")
    add("")
    add(
        f"| system | submit only: tasks/s | script fn: round trip {US} | script fn: tasks/s | "
        "script fn: submit only | payload s | cold runs ok | exec to 1st result ms | "
        "cold shutdown ms | alive 3 s after shutdown (+ resource trackers) | "
        "ended by parent |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for entry in systems.values():
        if "summary" not in entry:
            continue
        s = entry["summary"]
        add(
            f"| {entry['label']} | {fmt(s['submit_per_s'])} | {fmt(s['rt_script_us'])} | "
            f"{fmt(s['tasks_per_s_script'])} | {fmt(s['submit_per_s_script'])} | "
            f"{fmt(s['payload_median_s'], 3)} | "
            f"{s['cold_ok']}/{s['cold_runs']} | {fmt(s['exec_to_first_ms'])} | "
            f"{fmt(s['cold_shutdown_ms'])} | "
            f"{s['alive_after_shutdown']} (+{s['trackers_after_shutdown']}) | "
            f"{s['ended_by_parent']} |"
        )
    add("")
    errors = [
        f"- {entry['label']}: {_errors_line(part)}"
        for entry in systems.values()
        for part in [entry.get("warm", {}), *entry.get("cold", [])]
        if part.get("errors")
    ]
    for tag in ("floor", "floor_end"):
        if run.get(tag, {}).get("errors"):
            errors.append(f"- {tag}: {_errors_line(run[tag])}")
    if errors:
        add("Errors (full text in the JSON):")
        add("")
        lines.extend(errors)
        add("")
    gaps = [
        f"- {entry['label']}, {figure}: {why}"
        for entry in systems.values()
        for name, why in (entry.get("summary", {}).get("dashes") or {}).items()
        for figure in [FIGURE_NAMES.get(name, name)]
    ]
    if gaps:
        add("Figures a system does not have (a dash above):")
        add("")
        lines.extend(gaps)
        add("")
    end = ", ".join(f"{x:.2f}" for x in meta["loadavg_end"])
    add(f"Run wall time {meta['wall_s']:.0f} s; load avg at end {end}")
    return "\n".join(lines)


def add_shared_memory(lines: list[str], run: dict[str, Any]) -> None:
    """The payload in and in+out through shared memory, the socket, and two memcpy."""
    systems, memcpy = run["systems"], run.get("floor", {}).get("memcpy")
    shm = systems.get("pycrew", {}).get("summary")
    tcp = systems.get("pycrew-tcp", {}).get("summary")
    if shm is None or not memcpy:
        return
    mb = memcpy["array_mb"]
    copy_ms = 1000 * memcpy["median"]

    def ms(rate: float | None) -> float | None:
        return None if not rate else 1000 * mb / rate

    in_ms, both_ms = ms(shm.get("mb_per_s")), ms(shm.get("mb_per_s_out"))
    text = (
        f"Payload through shared memory, same run: {mb:g} MB in {fmt(in_ms, 1)} ms, in+out "
        f"{fmt(both_ms, 1)} ms; one memcpy of the array {fmt(copy_ms, 1)} ms, so in+out is "
        f"{ratio(both_ms, 2 * copy_ms)} {TIMES} the time of two (the floor: one copy each way)."
    )
    if tcp is not None:
        tcp_in, tcp_both = ms(tcp.get("mb_per_s")), ms(tcp.get("mb_per_s_out"))
        faster_in = fmt_ratio(better_ratio("time", in_ms, tcp_in))
        faster_both = fmt_ratio(better_ratio("time", both_ms, tcp_both))
        text += (
            f" Through the socket (shared_memory=False): in {fmt(tcp_in, 1)} ms, in+out "
            f"{fmt(tcp_both, 1)} ms; shared memory is {faster_in} and {faster_both} {TIMES} "
            "as fast."
        )
    lines.extend([text, ""])


def add_many_tasks(lines: list[str], run: dict[str, Any]) -> None:
    """The map, the payload back, the controller's CPU per task, the many-task run."""
    cfg = run["config"]
    big = f"{cfg.get('million_n', 0):,}"
    lines.append(
        f"| system | map: tasks | map: tasks/s | {cfg['pl_mb']:g} MB in+out: MB/s | "
        f"controller CPU {US}/task | {big} tasks: s | peak RSS MB | RSS before MB |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for entry in run["systems"].values():
        s = entry.get("summary")
        if not s:
            continue
        lines.append(
            f"| {entry['label']} | {fmt(s['map_n'])} | {fmt(s['map_tasks_per_s'])} | "
            f"{fmt(s['mb_per_s_out'])} | {fmt(s['cpu_us_per_task'])} | {fmt(s['million_s'], 1)} | "
            f"{fmt(s['million_peak_mb'])} | {fmt(s['million_base_mb'])} |"
        )
    lines.append("")
    lines.append(
        f"map: trivial tasks through the system's own map or batch API, timed once (a system "
        f"too slow for {cfg.get('map_n', 0):,} in about {cfg.get('map_tmax_s', 0) / 2:.0f} s "
        f"maps fewer). Controller CPU: the driver process's user + system seconds over the "
        f"throughput run, per task. {big} tasks: a task per item in a fresh interpreter, every "
        "handle held (pycrew: walk + wait + collect; Dask: client.map; the others: submit "
        "each, then gather); peak RSS of that process, and its peak before."
    )
    hog = run.get("hog") or {}
    if hog.get("n"):
        lines.append("")
        lines.append(
            f"Under load: {hog['n']} busy process(es) (`while True: pass`) ran for the whole "
            f"run; still running after they were ended: {hog.get('left_after_end', '?')}."
        )
    lines.append("")


def _errors_line(part: dict[str, Any]) -> str:
    errs = part.get("errors") or {}
    mode = part.get("mode", "")
    return "; ".join(f"{mode} {k}: {v.splitlines()[0][:200]}" for k, v in errs.items())
