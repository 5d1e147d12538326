"""Running one scenario against one broker with hmq-bench, and the figures derived from its result."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .common import (
    GEN_INFLIGHT,
    HOST,
    KEEPALIVE,
    child_priority,
    clear_sessions,
    fmt_num,
    fmt_us,
    get,
    log,
)
from .scenarios import Scenario
from .brokers import BrokerProc


# --------------------------------------------------------------------------------------------
# Running scenarios
# --------------------------------------------------------------------------------------------


def bench_cmd(bench: str, sc: Scenario, port: int, pid: int, out_json: Path, rate: float,
              gen_threads: int) -> list[str]:
    rate_s = f"{rate:g}" if rate else "0"
    return [bench, sc.mode, "--host", HOST, "--port", str(port), "--qos", str(sc.qos),
            # hmq-bench's --duration is the publishing time, warm-up included.
            "--size", str(sc.size), "--rate", rate_s, "--duration", str(sc.warmup + sc.duration),
            "--drain", str(sc.drain), "--warmup", str(sc.warmup), "--inflight", str(GEN_INFLIGHT),
            "--broker-pid", str(pid), "--json", str(out_json), "--threads", str(gen_threads),
            "--keepalive", str(KEEPALIVE),
            # Distinct client ids per scenario: no takeover of a previous run's lingering session.
            "--client-prefix", sc.name] + (["--persistent"] if sc.persistent else []) + \
        list(sc.extra)


def run_scenario(bench: str, broker: BrokerProc, sc: Scenario, rate: float,
                 gen_threads: int) -> dict:
    out_json = broker.workdir / f"{sc.name}.json"
    out_log = broker.workdir / f"{sc.name}.log"
    out_json.unlink(missing_ok=True)
    cmd = bench_cmd(bench, sc, broker.port, broker.proc.pid, out_json, rate, gen_threads)
    # Bound: the run's own phases, connection set-up at the slowest plausible rate, and slack.
    budget = (sc.warmup + sc.duration + sc.drain) * 2 + 60 + sc.clients / 500
    rec = {"scenario": sc.name, "command": cmd, "rate_per_publisher": rate, "status": "ok"}
    busy0 = busy_cpu_s()
    log(f"{broker.name}: {sc.name} ({sc.describe()})")
    t0 = time.monotonic()
    with open(out_log, "wb") as lf:
        p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             preexec_fn=child_priority)
        try:
            rc = p.wait(budget)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = None
        except BaseException:  # interrupted: leave no load generator behind
            p.kill()
            p.wait()
            raise
    rec["wall_s"] = round(time.monotonic() - t0, 1)
    busy1 = busy_cpu_s()
    if busy0 is not None and busy1 is not None:
        rec["machine_busy_cpu_s"] = round(busy1 - busy0, 2)
    rec["exit_code"] = rc
    if out_json.exists():
        try:
            rec["result"] = json.loads(out_json.read_text())
        except json.JSONDecodeError as e:
            rec["result"] = None
            rec["status"] = f"failed: unreadable JSON ({e})"
    else:
        rec["result"] = None
    crashed = not broker.alive()
    if crashed:
        rc_b = broker.proc.returncode if broker.proc else None
        rec["status"] = f"failed: broker crashed (exit status {rc_b})"
    elif rc is None:
        rec["status"] = f"failed: timeout after {budget:.0f} s (hmq-bench killed)"
    elif rec["result"] is None and rec["status"] == "ok":
        rec["status"] = f"failed: hmq-bench exited {rc} without a JSON result (see {out_log.name})"
    elif sc.kind != "conn" and not get(rec, "result", "sent") and rec["status"] == "ok":
        errs = get(rec, "result", "errors", default=[]) or []
        rec["status"] = f"failed: nothing published ({'; '.join(map(str, errs[:2])) or 'no error given'})"
    elif rc != 0 and rec["status"] == "ok":
        # A result with a non-zero exit: keep the figures, say so.
        rec["status"] = f"finished with errors (hmq-bench exit {rc})"
    errs = get(rec, "result", "errors", default=[]) or []
    if errs:
        rec["errors"] = errs[:20]
    if sc.persistent and broker.alive():
        # The run's sessions stay on the broker, subscribed (to bench/p2p/<i>, which later runs
        # publish to again) and holding what was still queued: end them, so that no later run
        # pays for them.
        ids = sc.client_ids()
        cleared, problems = clear_sessions(broker.port, ids, 60)
        rec["sessions_cleared"] = {"sessions": len(ids), "cleared": cleared,
                                   "problems": problems[:5]}
        if problems:
            log(f"WARNING: {broker.name}: {sc.name}: {len(ids) - cleared} of {len(ids)} "
                f"persistent sessions not cleared: {problems[0]}")
    summary = summarize(sc, rec)
    log(f"{broker.name}: {sc.name}: {rec['status']}; {summary}")
    return rec


def summarize(sc: Scenario, rec: dict) -> str:
    r = rec.get("result") or {}
    if sc.kind == "conn":
        c = r.get("connect") or {}
        return (f"clients {c.get('clients')} failed {c.get('failed')} "
                f"rate {fmt_num(c.get('rate_per_s'))}/s; rss/conn {fmt_num(rss_per_conn(r))} B")
    return (f"delivered {fmt_num(r.get('received_per_s'))}/s sent {fmt_num(r.get('sent_per_s'))}/s "
            f"lost {r.get('lost')} dup {r.get('duplicates')} "
            f"p99 {fmt_us(latency(r).get('p99'))}")


def rss_per_conn(r: dict):
    b = r.get("broker") or {}
    clients = get(r, "connect", "clients") or 0
    failed = get(r, "connect", "failed") or 0
    ok = clients - failed
    if not ok or b.get("rss_peak_kib") is None or b.get("rss_start_kib") is None:
        return None
    return (b["rss_peak_kib"] - b["rss_start_kib"]) * 1024 / ok


def wait_idle(max_wait: float, cores: int) -> float:
    """Wait (at most max_wait s) until the machine's CPU use over one second is under 0.2 of a
    core, i.e. nothing else is running; returns the CPU cores in use at the last sample."""
    deadline = time.monotonic() + max_wait
    while True:
        a = busy_cpu_s()
        time.sleep(1)
        b = busy_cpu_s()
        used = (b - a) if a is not None and b is not None else 0.0
        if used < 0.2 or time.monotonic() >= deadline:
            return used
        log(f"waiting for an idle machine: other processes use {used:.1f} of {cores} cores")
        time.sleep(4)


def other_cpu_s(rec: dict):
    """Machine CPU during a run not spent by the broker or hmq-bench: noise from elsewhere."""
    busy = rec.get("machine_busy_cpu_s")
    r = rec.get("result") or {}
    if busy is None or not r:
        return None
    return max(0.0, busy - (get(r, "broker", "cpu_s") or 0) - (get(r, "generator", "cpu_s") or 0))


def latency(r: dict) -> dict:
    """The latency percentiles, or {} when no latency was sampled (count 0)."""
    lat = (r or {}).get("latency_us") or {}
    return lat if lat.get("count") else {}


def cpu_per_million(r: dict):
    cpu = get(r, "broker", "cpu_s")
    rec = r.get("received")
    if cpu is None or not rec:
        return None
    return cpu / rec * 1e6


def fixed_load_rate(results: dict, override: float | None, previous: dict | None) -> tuple[float, str]:
    """Per-publisher rate for the fixed-load scenario: half of Mosquitto's p2p-q1 maximum."""
    pairs = 500
    if override:
        return max(override / pairs, 0.01), f"--fixed-rate {override:g} msg/s total"
    src = get(results, "mosquitto", "p2p-q1", "result")
    how = "Mosquitto's p2p-q1 in this run"
    if not src and previous:
        src = get(previous, "brokers", "mosquitto", "scenarios", "p2p-q1", "result")
        how = "Mosquitto's p2p-q1 in the previous results.json (not measured in this run)"
    if src and src.get("received_per_s"):
        total = src["received_per_s"] / 2
        return max(round(total / pairs, 2), 0.01), f"half of {how}: {fmt_num(total)} msg/s total"
    return 20.0, "Mosquitto's p2p-q1 maximum unknown: fallback 10,000 msg/s total (20/s x 500)"

def busy_cpu_s() -> float | None:
    """CPU seconds all processes have used since boot (user + nice + system, from /proc/stat;
    interrupt time, where loopback traffic is partly accounted, is left out)."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()
        user, nice, system = (int(x) for x in f[1:4])
        return (user + nice + system) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
