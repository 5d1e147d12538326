"""Setting up the brokers of bench/compare (installing Mosquitto and rumqttd, building hmq), their fair configurations, and a running broker process."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
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


def build_hmq(skip: bool, with_bench: bool) -> None:
    if skip:
        return
    cmd = ["cargo", "build", "--release", "--bin", "hmq"] + (["--bin", "hmq-bench"] if with_bench else [])
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


def version_of(name: str, binary: str) -> str:
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
            if g.returncode == 0:
                ver += f" (git {g.stdout.strip()})"
            return ver
    except (OSError, subprocess.SubprocessError):
        pass
    return name



# --------------------------------------------------------------------------------------------
# Broker configurations (the "fair config", documented in bench/README.md)
# --------------------------------------------------------------------------------------------


def mosquitto_config(port: int) -> str:
    return f"""# Written by bench/compare: Mosquitto 2.0.11 configured for the benchmark.
listener {port} {HOST}
allow_anonymous true
# No persistence: every broker keeps sessions in memory only.
persistence false
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


def hmq_config(port: int, worker_threads: int | None) -> str:
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
    return json.dumps(cfg, indent=4) + "\n"


@dataclass
class BrokerProc:
    name: str
    binary: str
    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    logf: object = None
    config_path: Path | None = None
    worker_threads: int | None = None

    def write_config(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.name == "mosquitto":
            self.config_path = self.workdir / "mosquitto.conf"
            self.config_path.write_text(mosquitto_config(self.port))
            return [self.binary, "-c", str(self.config_path)]
        if self.name == "rumqttd":
            self.config_path = self.workdir / "rumqttd.toml"
            self.config_path.write_text(rumqttd_config(self.port))
            return [self.binary, "-q", "-c", str(self.config_path)]
        self.config_path = self.workdir / "hmq.config"
        self.config_path.write_text(hmq_config(self.port, self.worker_threads))
        return [self.binary, "-c", str(self.config_path)]

    def start(self, worker_threads: int | None = None, timeout: float = 30) -> None:
        self.worker_threads = worker_threads
        self.port = free_port()
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
