"""Setting up the brokers of bench/compare (installing Mosquitto and rumqttd, building hmq), their fair configurations, and a running broker process."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .common import (
    HOST,
    MAX_INFLIGHT,
    MAX_PACKET,
    MAX_QUEUED,
    NOFILE_WANTED,
    REPO,
    RUMQTTD_VERSION,
    child_priority,
    free_port,
    log,
    mqtt_probe,
    port_open,
    run,
)


# --------------------------------------------------------------------------------------------
# Setup: installs and builds
# --------------------------------------------------------------------------------------------


class SetupError(Exception):
    pass


def mosquitto_bin() -> str | None:
    for c in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if c and os.access(c, os.X_OK):
            return c
    return None


def ensure_mosquitto() -> str:
    b = mosquitto_bin()
    if not b:
        log("installing mosquitto (Debian package)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if run(["apt-get", "update"], env=env).returncode != 0 or \
                run(["apt-get", "install", "-y", "mosquitto"], env=env).returncode != 0:
            raise SetupError("apt-get install -y mosquitto failed (needs root and Debian's mirror)")
        b = mosquitto_bin()
        if not b:
            raise SetupError("mosquitto installed but no mosquitto binary found")
    return b


def ensure_rumqttd(tools: Path) -> str:
    b = tools / "bin" / "rumqttd"
    if b.exists() and RUMQTTD_VERSION in version_of("rumqttd", str(b)):
        return str(b)
    log(f"installing rumqttd {RUMQTTD_VERSION} into {tools} (cargo install, a few minutes once)")
    tools.mkdir(parents=True, exist_ok=True)
    # Not --locked: the crate's old lock file no longer compiles with current toolchains.
    r = run(["cargo", "install", "rumqttd", "--version", RUMQTTD_VERSION, "--root", tools])
    if r.returncode != 0 or not b.exists():
        raise SetupError(f"cargo install rumqttd --version {RUMQTTD_VERSION} failed")
    return str(b)


def ensure_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is not None:
        return
    log("installing matplotlib (pip)")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"]
    r = run(cmd)
    if r.returncode != 0:
        # Debian's Python may be marked externally managed.
        r = run(cmd + ["--break-system-packages"])
    if r.returncode != 0:
        raise SetupError("pip install matplotlib failed")


def build_hmq(skip: bool, with_hmq: bool, with_bench: bool) -> None:
    """cargo build --release of hmq and/or hmq-bench (the ones not given as prebuilt binaries)."""
    bins = (["hmq"] if with_hmq else []) + (["hmq-bench"] if with_bench else [])
    if skip or not bins:
        return
    cmd = ["cargo", "build", "--release"] + [a for b in bins for a in ("--bin", b)]
    if run(cmd, cwd=REPO).returncode != 0:
        raise SetupError(" ".join(cmd) + " failed")


def raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by brokers and hmq-bench); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_WANTED
    if hard != resource.RLIM_INFINITY and hard < want:
        try:  # root with CAP_SYS_RESOURCE may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        raise SetupError(
            f"the open-file limit is {soft} (hard limit {hard}) but the conn scenario needs "
            f"{needed} descriptors in the broker and in hmq-bench; raise the hard limit "
            f"(e.g. `ulimit -Hn {NOFILE_WANTED}` as root, or the container's nofile ulimit), "
            f"or leave that scenario out with --scenarios")
    return soft


def version_of(name: str, binary: str, prebuilt: bool = False) -> str:
    """The broker's version; for hmq the checkout's version and git revision (with `prebuilt`,
    the binary was given with --hmq-bin and need not come from this revision)."""
    try:
        if name == "mosquitto":
            out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10)
            m = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
            return f"mosquitto {m.group(1)}" if m else "mosquitto (unknown version)"
        if name == "rumqttd":
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
            return out.stdout.strip() or "rumqttd (unknown version)"
        if name == "hmq":
            ver = "hmq"
            cargo = (REPO / "broker" / "Cargo.toml").read_text() if (REPO / "broker").exists() else ""
            ws = (REPO / "Cargo.toml").read_text()
            m = re.search(r'^version\s*=\s*"([^"]+)"', ws, re.M) or \
                re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M)
            if m:
                ver += f" {m.group(1)}"
            g = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                               capture_output=True, text=True, timeout=10)
            rev = f"git {g.stdout.strip()}" if g.returncode == 0 else ""
            if prebuilt:
                ver += f" (--hmq-bin {binary}" + (f"; checkout at {rev}" if rev else "") + ")"
            elif rev:
                ver += f" ({rev})"
            return ver
    except (OSError, subprocess.SubprocessError):
        pass
    return name



# --------------------------------------------------------------------------------------------
# Broker configurations (the "fair config", documented in bench/README.md)
# --------------------------------------------------------------------------------------------


def mosquitto_config(port: int, persistence_dir: Path | None = None) -> str:
    if persistence_dir is None:
        persistence = """# No persistence: every broker keeps sessions in memory only.
persistence false"""
    else:
        persistence = f"""# Persistence as Mosquitto's users run it: Debian's packaged mosquitto.conf sets the first
# two lines, the other three are Mosquitto's defaults, written out. The whole in-memory state
# is written to persistence_file every autosave_interval seconds and at a clean stop.
persistence true
persistence_location {persistence_dir}
persistence_file mosquitto.db
autosave_interval {MOSQUITTO_AUTOSAVE_S}
autosave_on_changes false"""
    return f"""# Written by bench/compare: Mosquitto 2.0.11 configured for the benchmark.
listener {port} {HOST}
allow_anonymous true
{persistence}
# In-flight and queue limits high enough that nothing is dropped by configuration.
max_inflight_messages {MAX_INFLIGHT}
max_inflight_bytes 0
max_queued_messages {MAX_QUEUED}
max_queued_bytes 0
# Same largest packet as the other brokers (whole packet, headers included).
max_packet_size {MAX_PACKET}
# hmq sets TCP_NODELAY on client sockets; so does Mosquitto here.
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
"""


def rumqttd_config(port: int) -> str:
    return f"""# Written by bench/compare: rumqttd {RUMQTTD_VERSION} configured for the benchmark.
# Only one MQTT 3.1.1 server on {HOST}; no console, no prometheus, no v5, no websocket listener.
id = 0

[router]
id = 0
# Upper bound on connections (a preallocated slab); above every scenario's count.
max_connections = 65536
max_outgoing_packet_count = 200
# Per-filter commit log kept in memory: 10 segments of 100 MB, far above what a run publishes,
# so no message is dropped by the log wrapping around.
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{HOST}:{port}"
# The default config sleeps 1 ms after every accept; no pause here (fair connect rate).
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    # Largest incoming packet, as for the other brokers.
    max_payload_size = {MAX_PACKET}
    # Packets read from one connection in one batch.
    max_inflight_count = {MAX_INFLIGHT}
    dynamic_filters = true
"""


def hmq_config(port: int, worker_threads: int | None, store: Path | None = None,
               sync: str | None = None) -> str:
    """hmq.config; with `store`, the durable store in that directory with `sync` as
    persistence.sync (and hmq's default group-commit interval for interval and none)."""
    cfg = {
        "host": HOST,
        "port": port,
        "workerThreads": worker_threads or 0,
        "maxPacketSize": MAX_PACKET,
        "maxConnections": 0,
        "maxInflight": MAX_INFLIGHT,
        "maxQueuedMessages": MAX_QUEUED,
        "maxAwaitingRel": 65535,
        "maxSubscriptionsPerClient": 0,
        "maxSessions": 0,
        # The HTTP listener (metrics, probes) is not part of the comparison.
        "httpPort": "",
    }
    if store is not None:
        cfg["persistence"] = {"dir": str(store), "sync": sync}
        if sync != "always":  # `always` commits back to back: no interval
            cfg["persistence"]["syncIntervalMs"] = HMQ_SYNC_INTERVAL_MS
    return json.dumps(cfg, indent=4) + "\n"


# --------------------------------------------------------------------------------------------
# Broker variants: one broker program with one configuration, one process, one run directory
# --------------------------------------------------------------------------------------------

MOSQUITTO_AUTOSAVE_S = 1800  # Mosquitto's default autosave_interval
HMQ_SYNC_INTERVAL_MS = 10  # hmq's default persistence.syncIntervalMs


@dataclass(frozen=True)
class Variant:
    name: str  # --brokers key, run directory, results.json key
    program: str  # mosquitto | rumqttd | hmq
    title: str
    store: bool = False  # durable store on (persistence true, persistence.dir)
    sync: str | None = None  # hmq's persistence.sync

    def runs(self, sc) -> bool:
        """Whether this variant runs scenario `sc`: the store variants run the persistent
        scenarios only, where the in-memory brokers are their baseline; rumqttd has no
        persistence and runs none of them; the threads-N steps are hmq's."""
        if sc.family == "threads":
            return self.name == "hmq"
        if sc.family == "persist":
            return self.program != "rumqttd"
        return not self.store


VARIANTS = [
    Variant("mosquitto", "mosquitto", "Mosquitto, in memory"),
    Variant("mosquitto-persist", "mosquitto", "Mosquitto, persistence true "
            f"(autosave every {MOSQUITTO_AUTOSAVE_S} s and at stop)", store=True),
    Variant("rumqttd", "rumqttd", "rumqttd, in memory (it has no persistence)"),
    Variant("hmq", "hmq", "hmq, in memory"),
    Variant("hmq-always", "hmq", "hmq, durable store, sync always (each ack waits for its commit, with fsync)",
            store=True, sync="always"),
    Variant("hmq-interval", "hmq", f"hmq, durable store, sync interval (group commit every "
            f"{HMQ_SYNC_INTERVAL_MS} ms, fsync)", store=True, sync="interval"),
    Variant("hmq-none", "hmq", f"hmq, durable store, sync none (written every "
            f"{HMQ_SYNC_INTERVAL_MS} ms, no fsync)", store=True, sync="none"),
]


def variant_config(v: Variant, port: int, workdir: Path, worker_threads: int | None = None) -> str:
    """The configuration file of variant `v` with its run directory `workdir`."""
    if v.program == "mosquitto":
        return mosquitto_config(port, store_dir(v, workdir))
    if v.program == "rumqttd":
        return rumqttd_config(port)
    return hmq_config(port, worker_threads, store_dir(v, workdir), v.sync)


def config_file(v: Variant) -> str:
    return {"mosquitto": "mosquitto.conf", "rumqttd": "rumqttd.toml"}.get(v.program, "hmq.config")


def store_dir(v: Variant, workdir: Path) -> Path | None:
    """Where variant `v` keeps its durable state (None: in memory only)."""
    if not v.store:
        return None
    return workdir / ("persistence" if v.program == "mosquitto" else "store")


def fresh_store(v: Variant, workdir: Path) -> None:
    """Empty the variant's store directory, so that each start begins with nothing stored.
    Mosquitto started as root drops to its `mosquitto` user (Debian's package creates it) and
    must be able to write its directory."""
    d = store_dir(v, workdir)
    if d is None:
        return
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if v.program == "mosquitto" and os.geteuid() == 0:
        try:
            u = pwd.getpwnam("mosquitto")
            os.chown(d, u.pw_uid, u.pw_gid)
        except KeyError:
            pass  # no such user: Mosquitto keeps running as root


@dataclass
class BrokerProc:
    variant: Variant
    binary: str
    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    logf: object = None
    config_path: Path | None = None
    worker_threads: int | None = None

    @property
    def name(self) -> str:
        return self.variant.name

    def write_config(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / config_file(self.variant)
        self.config_path.write_text(variant_config(self.variant, self.port, self.workdir,
                                                   self.worker_threads))
        if self.variant.program == "rumqttd":
            return [self.binary, "-q", "-c", str(self.config_path)]
        return [self.binary, "-c", str(self.config_path)]

    def start(self, worker_threads: int | None = None, timeout: float = 30) -> None:
        self.worker_threads = worker_threads
        self.port = free_port()
        fresh_store(self.variant, self.workdir)
        argv = self.write_config()
        self.logf = open(self.workdir / "broker.log", "ab")
        self.logf.write(f"\n==== bench/compare: {' '.join(argv)} "
                        f"at {dt.datetime.now().isoformat(timespec='seconds')}\n".encode())
        self.logf.flush()
        log(f"starting {self.name} on {HOST}:{self.port}")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     env=dict(os.environ, NO_COLOR="1"),
                                     preexec_fn=child_priority)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode} at "
                                   f"start; see {self.workdir / 'broker.log'}")
            if port_open(self.port) and mqtt_probe(self.port, 5) is None:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not accept connections on {HOST}:{self.port} "
                           f"within {timeout:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {timeout:.0f} s of SIGTERM: SIGKILL")
                self.proc.kill()
                rc = self.proc.wait()
        if self.logf:
            self.logf.write(f"==== bench/compare: exited with status {rc}\n".encode())
            self.logf.close()
            self.logf = None
        self.proc = None
        return rc
