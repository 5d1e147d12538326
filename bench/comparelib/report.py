"""The report of bench/compare: machine information, per-scenario tables, the targets, report.md, results.json and the charts."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
from pathlib import Path

from .common import GEN_INFLIGHT, KEEPALIVE, fmt_num, fmt_ratio, fmt_us, get, log
from .running import cpu_per_million, latency, other_cpu_s, rss_per_conn


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------




def machine_info() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = int(m.group(1)) // 1024 if m else None
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def res(data: dict, broker: str, scen: str) -> dict | None:
    return get(data, "brokers", broker, "scenarios", scen)


def ok_result(data: dict, broker: str, scen: str) -> dict | None:
    rec = res(data, broker, scen)
    if not rec or not rec.get("result") or rec.get("status", "").startswith(("failed", "skipped")):
        return None
    return rec["result"]


def status_cell(rec: dict | None) -> str:
    if rec is None:
        return "not run"
    st = rec.get("status", "ok")
    return "ok" if st == "ok" else st


def delivered_fraction(r: dict):
    exp = r.get("expected")
    if not exp:
        return None
    return (r.get("unique_received") or r.get("received") or 0) / exp


def kept_up(r: dict) -> bool:
    """Delivered, while publishing, at least 97 % of the deliveries the offered load called for,
    and in the end ≥ 99 % of them."""
    sent, exp = r.get("sent") or 0, r.get("expected") or 0
    if not sent or not exp:
        return False
    offered = (r.get("sent_per_s") or 0) * exp / sent
    frac = delivered_fraction(r) or 0
    return (r.get("received_per_s") or 0) >= 0.97 * offered and frac >= 0.99


def throughput_ratio(data, scen, peer):
    h, p = ok_result(data, "hmq", scen), ok_result(data, peer, scen)
    if not h or not p or not p.get("received_per_s"):
        return None
    return h.get("received_per_s", 0) / p["received_per_s"]


def variants_for(data: dict, sc: dict) -> list[str]:
    """The broker variants that run scenario `sc`, in the order they ran (results.json files
    written before variants existed: every broker, and hmq alone for the threads-N steps)."""
    if sc["family"] == "threads":
        return ["hmq"]
    info = data.get("variants")
    if not info:
        return data["brokers_run"]
    return [b for b in data["brokers_run"] if sc["name"] in (info.get(b) or {}).get("scenarios", [])]


def issue3_scenarios(data: dict) -> list[dict]:
    """The scenarios the issue 3 targets are judged on: all but the persistent-session family,
    which has its own goals (Persistent sessions)."""
    return [s for s in data["scenarios"] if s["family"] != "persist"]


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def scenario_section(data: dict, sc: dict) -> list[str]:
    name = sc["name"]
    brokers = variants_for(data, sc)
    lines = [f"### {name}: {sc['title']}", "", sc["description"] + "."]
    if sc.get("note"):
        lines.append(f"{sc['note']}.")
    lines.append("")
    if sc["kind"] == "conn":
        header = ["broker", "status", "connected", "failed", "connect rate /s", "connect p50",
                  "connect p99", "RSS start", "RSS peak", "RSS per connection", "broker CPU s",
                  "other CPU s"]
        rows = []
        for b in brokers:
            rec = res(data, b, name)
            r = (rec or {}).get("result") or {}
            c = r.get("connect") or {}
            br = r.get("broker") or {}
            conn = (c.get("clients") or 0) - (c.get("failed") or 0) if c else None
            rpc = rss_per_conn(r) if r else None
            rows.append([b, status_cell(rec), fmt_num(conn) if c else "–", fmt_num(c.get("failed")),
                         fmt_num(c.get("rate_per_s")), fmt_us(get(c, "latency_us", "p50")),
                         fmt_us(get(c, "latency_us", "p99")), kib(br.get("rss_start_kib")),
                         kib(br.get("rss_peak_kib")),
                         f"{fmt_num(rpc)} B" if rpc is not None else "–",
                         fmt_num(br.get("cpu_s"), 2), fmt_num(other_cpu_s(rec or {}), 1)])
        lines += md_table(header, rows)
    else:
        header = ["broker", "status", "delivered msg/s", "sent msg/s", "delivered / expected",
                  "lost", "dups", "p50", "p99", "p99.9", "broker CPU s", "CPU s / M delivered",
                  "peak RSS", "hmq-bench CPU s", "other CPU s"]
        rows = []
        for b in brokers:
            rec = res(data, b, name)
            r = (rec or {}).get("result") or {}
            lat = latency(r)
            br = r.get("broker") or {}
            frac = delivered_fraction(r) if r else None
            rows.append([b, status_cell(rec), fmt_num(r.get("received_per_s")),
                         fmt_num(r.get("sent_per_s")),
                         f"{frac * 100:.2f} %" if frac is not None else "–",
                         fmt_num(r.get("lost")), fmt_num(r.get("duplicates")),
                         fmt_us(lat.get("p50")), fmt_us(lat.get("p99")), fmt_us(lat.get("p999")),
                         fmt_num(br.get("cpu_s"), 2), fmt_num(cpu_per_million(r), 2) if r else "–",
                         kib(br.get("rss_peak_kib")), fmt_num(get(r, "generator", "cpu_s"), 2),
                         fmt_num(other_cpu_s(rec or {}), 1)])
        lines += md_table(header, rows)
        if sc["family"] == "persist":
            lines += ["", "Ratios to the in-memory brokers: [Persistent sessions]"
                          "(#persistent-sessions)."]
        elif sc["family"] != "threads" and "hmq" in brokers:
            parts = []
            for peer in ("mosquitto", "rumqttd"):
                if peer in brokers:
                    parts.append(f"hmq/{peer} delivered msg/s: "
                                 f"**{fmt_ratio(throughput_ratio(data, name, peer))}**")
            if parts:
                lines += ["", "; ".join(parts) + "."]
    errs = []
    for b in brokers:
        rec = res(data, b, name) or {}
        for e in (rec.get("errors") or [])[:5]:
            errs.append(f"- {b}: {e}")
    if errs:
        lines += ["", "Errors reported by hmq-bench:", ""] + errs
    return lines + [""]


def kib(v) -> str:
    if v is None:
        return "–"
    return f"{v / 1024:,.1f} MiB"


def disk_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:,.1f} KiB"
    return f"{n / (1024 * 1024):,.1f} MiB"


def evaluate_targets(data: dict) -> list[dict]:
    """The issue's targets, each with the figures behind it and met / missed / n/a."""
    brokers = data["brokers_run"]
    rows = []

    def row(target, measured, status):
        rows.append({"target": target, "measured": measured, "status": status})

    scenarios = issue3_scenarios(data)
    tput = [s for s in scenarios if s["kind"] == "throughput" and s["family"] != "threads"]
    for peer, need in (("mosquitto", 1.5), ("rumqttd", 1.2)):
        if "hmq" not in brokers or peer not in brokers:
            row(f"throughput ≥ {need}× {peer} in every scenario", f"{peer} or hmq not run", "n/a")
            continue
        parts, judged, missed = [], 0, 0
        for s in tput:
            name = s["name"]
            h, p = ok_result(data, "hmq", name), ok_result(data, peer, name)
            if not h:
                parts.append(f"{name}: hmq failed" if res(data, "hmq", name) else None)
                if res(data, "hmq", name):
                    judged += 1
                    missed += 1
                continue
            if not p:
                if res(data, peer, name):
                    parts.append(f"{name}: {peer} failed")
                continue
            r = throughput_ratio(data, name, peer)
            if s["capped"] and kept_up(h) and kept_up(p):
                parts.append(f"{name}: {r:.2f}× (both kept up with the offered load)")
                continue
            judged += 1
            if r is None or r < need:
                missed += 1
            parts.append(f"{name}: {fmt_ratio(r)}")
        parts = [p for p in parts if p]
        status = "n/a" if not judged else ("met" if not missed else f"missed ({missed}/{judged})")
        row(f"throughput ≥ {need}× {peer} in every scenario", "; ".join(parts) or "no data", status)

    # CPU per million delivered.
    if "hmq" in brokers and "mosquitto" in brokers:
        parts, judged, missed = [], 0, 0
        for s in tput:
            h, m = ok_result(data, "hmq", s["name"]), ok_result(data, "mosquitto", s["name"])
            if not h or not m:
                continue
            ch, cm = cpu_per_million(h), cpu_per_million(m)
            if ch is None or cm is None:
                continue
            judged += 1
            if ch > cm:
                missed += 1
            parts.append(f"{s['name']}: {ch:.2f} vs {cm:.2f}")
        status = "n/a" if not judged else ("met" if not missed else f"missed ({missed}/{judged})")
        row("broker CPU s per million delivered ≤ Mosquitto's (hmq vs mosquitto)",
            "; ".join(parts) or "no data", status)
    else:
        row("broker CPU s per million delivered ≤ Mosquitto's", "hmq or mosquitto not run", "n/a")

    # RSS per idle connection.
    h, m = ok_result(data, "hmq", "conn"), ok_result(data, "mosquitto", "conn")
    if h and m and rss_per_conn(h) is not None and rss_per_conn(m) is not None:
        rh, rm = rss_per_conn(h), rss_per_conn(m)
        rr = ok_result(data, "rumqttd", "conn")
        extra = f"; rumqttd {fmt_num(rss_per_conn(rr))} B" if rr and rss_per_conn(rr) is not None else ""
        row("RSS per idle connection ≤ Mosquitto's (conn, 10,000 connections)",
            f"hmq {fmt_num(rh)} B, mosquitto {fmt_num(rm)} B{extra}", "met" if rh <= rm else "missed")
    else:
        row("RSS per idle connection ≤ Mosquitto's", "conn not measured for hmq and mosquitto", "n/a")

    # p99 at fixed load.
    h = ok_result(data, "hmq", "fixed-load")
    peers = [(p, ok_result(data, p, "fixed-load")) for p in ("mosquitto", "rumqttd") if p in brokers]
    hp99 = latency(h).get("p99")
    if hp99 is not None and peers:
        parts, missed, judged = [f"hmq {fmt_us(hp99)}"], 0, 0
        for p, r in peers:
            pp = latency(r).get("p99")
            if pp is None:
                parts.append(f"{p} {'failed' if res(data, p, 'fixed-load') else 'not run'}")
                continue
            judged += 1
            if hp99 > pp:
                missed += 1
            parts.append(f"{p} {fmt_us(pp)}")
        row("p99 latency at the fixed load ≤ both peers'", ", ".join(parts),
            "n/a" if not judged else ("met" if not missed else "missed"))
    else:
        row("p99 latency at the fixed load ≤ both peers'", "fixed-load not measured", "n/a")

    # Zero loss and duplicates at QoS 1/2 for hmq.
    lost = dups = n = 0
    failed = []
    for s in scenarios:
        if s["kind"] == "conn" or s["qos"] == 0:
            continue
        rec = res(data, "hmq", s["name"])
        if not rec:
            continue
        r = ok_result(data, "hmq", s["name"])
        if not r:
            failed.append(s["name"])
            continue
        n += 1
        lost += r.get("lost") or 0
        dups += r.get("duplicates") or 0
    if n or failed:
        txt = f"{n} QoS 1/2 runs: lost {lost}, duplicates {dups}"
        if failed:
            txt += f"; failed: {', '.join(failed)}"
        row("zero loss and zero duplicates at QoS 1/2 (hmq)", txt,
            "met" if not lost and not dups and not failed else "missed")
    else:
        row("zero loss and zero duplicates at QoS 1/2 (hmq)", "hmq not run", "n/a")

    # Peak RSS.
    peaks = []
    for s in scenarios:
        r = (res(data, "hmq", s["name"]) or {}).get("result")
        v = get(r, "broker", "rss_peak_kib") if r else None
        if v is not None:
            peaks.append((v, s["name"]))
    if peaks:
        peaks.sort(reverse=True)
        v, where = peaks[0]
        nxt = next(((x, w) for x, w in peaks[1:] if w != where), None)
        others = []
        for p in ("mosquitto", "rumqttd"):
            pk = [get((res(data, p, s["name"]) or {}).get("result") or {}, "broker", "rss_peak_kib")
                  for s in scenarios]
            pk = [x for x in pk if x is not None]
            if pk:
                others.append(f"{p} {kib(max(pk))}")
        txt = f"hmq {kib(v)} (in {where}" + (f"; next highest {kib(nxt[0])} in {nxt[1]}"
                                             if nxt else "") + ")"
        txt += f"; {', '.join(others)}" if others else ""
        row("hmq peak RSS ≤ 200 MB through the scenario list", txt,
            "met" if v * 1024 <= 200e6 else "missed")
    else:
        row("hmq peak RSS ≤ 200 MB through the scenario list", "hmq not run", "n/a")

    # Scaling with worker threads.
    th = sorted((s for s in scenarios if s["family"] == "threads"),
                key=lambda s: s["worker_threads"])
    pts = [(s["worker_threads"], ok_result(data, "hmq", s["name"])) for s in th]
    pts = [(n, r["received_per_s"]) for n, r in pts if r and r.get("received_per_s")]
    if len(pts) >= 2:
        base = pts[0][1]
        txt = ", ".join(f"{n} thread{'s' if n > 1 else ''}: {fmt_num(v)}/s ({v / base:.2f}×)"
                        for n, v in pts)
        best = max(v for _, v in pts[1:]) / base
        row("throughput scales with worker threads (p2p-q1)", txt + " — the load generator shares "
            "the same cores", "met" if best >= 1.2 else "missed")
    else:
        row("throughput scales with worker threads", "threads-N not run", "n/a")
    return rows


# --------------------------------------------------------------------------------------------
# Persistent sessions: the durable stores against the in-memory brokers
# --------------------------------------------------------------------------------------------

GOAL_SCENARIO = "p2p-q1-persist"  # the durable QoS 1 p2p figure the goal is judged on
GOAL_VARIANT = "hmq-interval"  # group commit, hmq's default policy


def delivered_per_s(data: dict, broker: str, scen: str):
    r = ok_result(data, broker, scen)
    return r.get("received_per_s") if r else None


def evaluate_persist_goals(data: dict) -> list[dict]:
    """The persistence goals: with group commit, durable QoS 1 p2p delivers ≥ 50 % of hmq in
    memory and ≥ 3× Mosquitto in memory (its p2p-q1). Each reference falls back to the other
    in-memory run of the same broker when the first was not run."""
    if not any(s["name"] == GOAL_SCENARIO for s in data["scenarios"]):
        return []
    rows = []
    have = delivered_per_s(data, GOAL_VARIANT, GOAL_SCENARIO)
    for need, ref, scens, what in (
            (0.5, "hmq", [GOAL_SCENARIO, "p2p-q1"], "≥ 50 % of hmq in memory"),
            (3.0, "mosquitto", ["p2p-q1", GOAL_SCENARIO], "≥ 3× Mosquitto in memory")):
        goal = f"durable QoS 1 p2p with group commit ({GOAL_VARIANT}, {GOAL_SCENARIO}) {what}"
        base = next(((s, v) for s in scens if (v := delivered_per_s(data, ref, s))), None)
        if have is None:
            ran = res(data, GOAL_VARIANT, GOAL_SCENARIO)
            why = f"{GOAL_VARIANT} {'failed' if ran else 'not run'}"
            rows.append({"goal": goal, "measured": why, "status": "n/a", "ratio": None})
            continue
        if base is None:
            rows.append({"goal": goal, "measured": f"{ref} in memory not run ({' or '.join(scens)})",
                         "status": "n/a", "ratio": None})
            continue
        scen, v = base
        ratio = have / v
        kind = "persistent sessions" if scen == GOAL_SCENARIO else "clean sessions"
        rows.append({"goal": goal, "ratio": ratio,
                     "measured": f"{GOAL_VARIANT} {fmt_num(have)} msg/s, {ref} {fmt_num(v)} msg/s "
                                 f"({scen}, {kind}): **{fmt_ratio(ratio)}**",
                     "status": "met" if ratio >= need else "missed"})
    return rows


def persist_ratio(data: dict, broker: str, scen: str, ref: str):
    v, base = delivered_per_s(data, broker, scen), delivered_per_s(data, ref, scen)
    return v / base if v is not None and base else None


def persist_section(data: dict) -> list[str]:
    scens = [s for s in data["scenarios"] if s["family"] == "persist"]
    if not scens:
        return []
    info = data.get("variants") or {}
    ran = [b for b in data["brokers_run"] if any(b in variants_for(data, s) for s in scens)]
    L = ["## Persistent sessions", "",
         "Every client with clean session 0 (hmq-bench `--persistent`), the same load on the "
         "brokers in memory (`hmq`, `mosquitto`: their baseline) and on the variants with the "
         "durable store on, each its own process, its store directory emptied before each start. "
         "After each run the script ends the run's sessions (a clean-session CONNECT per client "
         "id), so that no later run pays for them. rumqttd has no persistence and is left out.", ""]
    L += [f"- `{b}`: {(info.get(b) or {}).get('title', b)}" for b in ran]
    if "mosquitto-persist" in ran:
        L += ["", "Mosquitto with `persistence true` writes its whole state to `mosquitto.db` "
              "every `autosave_interval` (1800 s, its default) and at a clean stop, so during a "
              "run it writes nothing; hmq commits every change (all but the ones that cancel "
              "within one commit) as the run goes."]
    L.append("")
    goals = data.get("persist_goals") or []
    if goals:
        L += [f"- {g['goal']}: {g['measured']} — **{g['status']}**" for g in goals] + [""]
    for sc in scens:
        brokers = variants_for(data, sc)
        L += [f"### {sc['name']}: {sc['title']}", "", sc["description"] + ".", ""]
        header = ["variant", "status", "delivered msg/s", "p50", "p99", "acked", "delivered",
                  "lost", "duplicates", "ratio to hmq in memory", "ratio to Mosquitto in memory"]
        rows = []
        for b in brokers:
            rec = res(data, b, sc["name"])
            r = (rec or {}).get("result") or {}
            lat = latency(r)
            rows.append([b, status_cell(rec), fmt_num(r.get("received_per_s")),
                         fmt_us(lat.get("p50")), fmt_us(lat.get("p99")), fmt_num(r.get("acked")),
                         fmt_num(r.get("unique_received")), fmt_num(r.get("lost")),
                         fmt_num(r.get("duplicates")),
                         fmt_ratio(persist_ratio(data, b, sc["name"], "hmq")),
                         fmt_ratio(persist_ratio(data, b, sc["name"], "mosquitto"))])
        L += md_table(header, rows)
        L += ["", "Acked: PUBACKs (QoS 1) or PUBCOMPs (QoS 2) the publishers received; "
              "delivered: distinct messages the subscribers received; ratios on delivered msg/s, "
              "to the same scenario on `hmq` and `mosquitto` in memory.", ""]
    hmqs = [b for b in ran if (info.get(b) or {}).get("program", b) == "hmq"]
    lost = dups = 0
    for b in hmqs:
        for sc in scens:
            r = ok_result(data, b, sc["name"])
            if r and sc["qos"]:
                lost += r.get("lost") or 0
                dups += r.get("duplicates") or 0
    if hmqs:
        L += [f"Loss and duplicates over the persistent runs of {', '.join(hmqs)}: lost "
              f"{fmt_num(lost)}, duplicates {fmt_num(dups)}."]
    sizes = [f"{b} {disk_size(data['brokers'][b]['store_bytes_at_stop'])}"
             for b in ran if data["brokers"].get(b, {}).get("store_bytes_at_stop") is not None]
    if sizes:
        L += ["", "Size of the files in the store directory after the stop (every session "
              "ended, the final commit or save done): " + ", ".join(sizes) + "."]
    return L + [""]


def write_report(data: dict, out: Path) -> None:
    m = data["machine"]
    L = ["# hmq vs Mosquitto vs rumqttd", "",
         f"Generated by `{' '.join(['bench/compare'] + data.get('argv', []))}` on {m['date_utc']}"
         f" ({data.get('wall_s', 0):.0f} s).", "",
         "## Machine", "",
         f"- CPU: {m['cpu_model']}, {m['cores']} cores; memory {fmt_num(m.get('memory_mib'))} MiB",
         f"- Kernel: {m['kernel']} ({m['os']})",
         "- Brokers: " + ", ".join(dict.fromkeys(data["versions"].get(b, b)
                                                 for b in data["brokers_run"])),
         f"- Load generator: hmq-bench, {data['gen_threads']} threads, per-publisher window "
         f"{GEN_INFLIGHT}, keepalive {KEEPALIVE} s; brokers and generator share the same cores "
         f"and run at nice {data.get('nice', 0)}",
         f"- Open-file limit: {data.get('nofile')}"]
    others = [(other_cpu_s(r), f"{b}/{n}") for b, bd in data["brokers"].items()
              for n, r in bd.get("scenarios", {}).items()]
    others = [(o, w) for o, w in others if o is not None]
    if others:
        worst, where = max(others)
        if worst <= 2:
            busy = ": the machine was otherwise idle"
        elif data.get("nice", 0) < 0:
            busy = (" (per run: the \"other CPU s\" column). The brokers and hmq-bench ran ahead of "
                    "that work (nice), which mostly used the CPU they left idle; compare rows "
                    "with care where it is large")
        else:
            busy = (" — other processes competed for the CPU (per run: the \"other CPU s\" "
                    "column), the figures are noisier than usual")
        L.append(f"- CPU used by processes other than the broker and hmq-bench during the runs: "
                 f"{sum(o for o, _ in others):.1f} s in total, at most {worst:.1f} s in one run "
                 f"({where}){busy}")
    L.append("")
    if data.get("interrupted"):
        L += ["**This run was interrupted**: the tables below show what was measured before.", ""]
    if data.get("fixed_load_note"):
        L += [f"Fixed load: {data['fixed_load_note']}.", ""]
    L += ["## Targets (issue 3)", ""]
    L += md_table(["target", "measured", "status"],
                  [[t["target"], t["measured"], f"**{t['status']}**"] for t in data["targets"]])
    L += ["", "Throughput targets are judged on delivered msg/s. In a rate-limited scenario where "
          "both brokers kept up with the offered load (while publishing, ≥ 97 % of the deliveries "
          "it called for; in the end ≥ 99 %), the ratio is about 1 by construction and is shown "
          "but not judged.", ""]
    # Broker start failures, crashes.
    problems = []
    for b in data["brokers_run"]:
        bd = data["brokers"].get(b, {})
        for ev in bd.get("events", []):
            problems.append(f"- {b}: {ev}")
    if problems:
        L += ["## Broker events", ""] + problems + [""]
    L += persist_section(data)
    L += ["## Scenarios", ""]
    for sc in data["scenarios"]:
        L += scenario_section(data, sc)
    charts = [c for c in CHARTS if (out / c).exists()]
    if charts:
        L += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    L += ["## Files", "",
          "`results.json` (everything here, with each run's full hmq-bench result and command "
          "line), `<broker>/<scenario>.json` and `.log` (hmq-bench output), "
          "`<broker>/broker.log` and the broker's configuration file in `<broker>/` (one "
          "directory per broker variant; a store variant's store in `<broker>/store` or "
          "`<broker>/persistence`).", ""]
    (out / "report.md").write_text("\n".join(L))


CHARTS = ("throughput.png", "latency.png", "persist.png")
# Bars: each broker's colour; its store variants in lighter or darker shades of it.
COLORS = {"mosquitto": "#3C5A99", "mosquitto-persist": "#7F96C8", "rumqttd": "#D9822B",
          "hmq": "#2E8B57", "hmq-none": "#8FD19E", "hmq-interval": "#5DB075",
          "hmq-always": "#1E5C3A"}


def log_floor(ax, items, value) -> None:
    """Start a log-scale axis well below the smallest bar, so that every bar shows, with plain
    numbers on the ticks."""
    from matplotlib.ticker import FuncFormatter
    vals = [value(x) for x in items if x]
    vals = [v for v in vals if v and v > 0]
    if vals:
        ax.set_ylim(bottom=min(vals) / 4)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))


def write_charts(data: dict, out: Path) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        log("matplotlib missing: no charts")
        return []
    # The issue 3 list: the three brokers in memory (the store variants: persist.png).
    brokers = [b for b in data["brokers_run"] if b in ("mosquitto", "rumqttd", "hmq")]
    made = []
    scen = [s for s in issue3_scenarios(data)
            if s["kind"] == "throughput" and s["family"] != "threads"
            and any((ok_result(data, b, s["name"]) or {}).get("received_per_s") for b in brokers)]
    if scen:
        fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(scen) + 2), 5))
        width = 0.8 / max(len(brokers), 1)
        for i, b in enumerate(brokers):
            xs, ys = [], []
            for j, s in enumerate(scen):
                r = ok_result(data, b, s["name"])
                x = j + (i - (len(brokers) - 1) / 2) * width
                if r and r.get("received_per_s"):
                    xs.append(x)
                    ys.append(r["received_per_s"])
                elif res(data, b, s["name"]):
                    ax.text(x, 1, "failed", rotation=90, ha="center", va="bottom", fontsize=7,
                            color=COLORS.get(b))
            bars = ax.bar(xs, ys, width, label=b, color=COLORS.get(b))
            for bar, y in zip(bars, ys):
                ax.text(bar.get_x() + bar.get_width() / 2, y, f"{y / 1000:.1f}k", ha="center",
                        va="bottom", fontsize=6, rotation=90)
        ax.set_xticks(range(len(scen)))
        ax.set_xticklabels([s["name"] + ("\n(rate-limited)" if s["capped"] else "")
                            for s in scen], rotation=0, fontsize=8)
        ax.set_yscale("log")
        log_floor(ax, [ok_result(data, b, s["name"]) for b in brokers for s in scen],
                  lambda r: r.get("received_per_s"))
        ax.set_ylabel("delivered msg/s (log scale)")
        ax.set_title("Delivered messages per second (higher is better)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        plt.close(fig)
        made.append("throughput.png")
    pcts = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999")]
    have = [(b, ok_result(data, b, "fixed-load")) for b in brokers]
    have = [(b, r) for b, r in have if latency(r)]
    if have:
        fig, ax = plt.subplots(figsize=(8, 5))
        width = 0.8 / len(have)
        for i, (b, r) in enumerate(have):
            xs = [j + (i - (len(have) - 1) / 2) * width for j in range(len(pcts))]
            ys = [(r["latency_us"].get(k) or 0) / 1000 for _, k in pcts]
            bars = ax.bar(xs, ys, width, label=b, color=COLORS.get(b))
            for bar, y in zip(bars, ys):
                ax.text(bar.get_x() + bar.get_width() / 2, y, f"{y:.2f}", ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(range(len(pcts)))
        ax.set_xticklabels([p for p, _ in pcts])
        ax.set_yscale("log")
        log_floor(ax, [latency(r) for _, r in have], lambda lat: (lat.get("p50") or 0) / 1000)
        ax.set_ylabel("end-to-end latency, ms (log scale)")
        note = data.get("fixed_load_note", "")
        ax.set_title("Latency at the fixed load (lower is better)\n" + note, fontsize=9)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        made.append("latency.png")
    persist = [s for s in data["scenarios"] if s["family"] == "persist"]
    runs = [(s, [(b, delivered_per_s(data, b, s["name"])) for b in variants_for(data, s)])
            for s in persist]
    runs = [(s, [(b, v) for b, v in bs if v]) for s, bs in runs]
    runs = [(s, bs) for s, bs in runs if bs]
    if runs:
        fig, ax = plt.subplots(figsize=(max(8, 3 * len(runs) + 2), 5))
        labelled = set()
        for j, (s, bs) in enumerate(runs):
            width = 0.8 / len(bs)
            for i, (b, v) in enumerate(bs):
                x = j + (i - (len(bs) - 1) / 2) * width
                ax.bar([x], [v], width, color=COLORS.get(b, "#888888"),
                       label=None if b in labelled else b)
                labelled.add(b)
                ax.text(x, v, f"{v / 1000:.1f}k", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([s["name"] for s, _ in runs], fontsize=8)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_ylabel("delivered msg/s")
        ax.set_title("Persistent sessions: in memory and with the durable store "
                     "(higher is better)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "persist.png", dpi=110)
        plt.close(fig)
        made.append("persist.png")
    return made


def finish(data: dict, out: Path) -> None:
    data["targets"] = evaluate_targets(data)
    data["persist_goals"] = evaluate_persist_goals(data)
    for c in CHARTS:
        (out / c).unlink(missing_ok=True)
    try:
        write_charts(data, out)
    except Exception as e:  # noqa: BLE001 - a chart must never cost the report
        log(f"WARNING: charts not written: {e}")
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    write_report(data, out)
    log(f"wrote {out / 'report.md'}, {out / 'results.json'} and charts")
