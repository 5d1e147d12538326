"""Constants shared by every part of bench/compare (fair broker limits, the one address it talks to), logging, process helpers, ports and number formatting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent.parent
HOST = "127.0.0.1"  # the only address this script ever talks to

# Same limits for every broker (see "fair config" in bench/README.md).
MAX_PACKET = 1024 * 1024 + 1024  # 1 MiB + headroom for the fixed and variable headers
MAX_INFLIGHT = 1000  # outbound QoS 1/2 window per client
MAX_QUEUED = 1_000_000  # queued messages per client behind the window
KEEPALIVE = 60  # rumqttd refuses keepalive 0
PRIORITY = {"nice": 0}  # scheduling priority of brokers and hmq-bench (--nice)
GEN_INFLIGHT = 100  # hmq-bench's per-publisher window of unacknowledged QoS 1/2 PUBLISHes
NOFILE_WANTED = 65536

BROKERS = ["mosquitto", "rumqttd", "hmq"]
RUMQTTD_VERSION = "0.20.0"
MOSQUITTO_VERSION = "2.0.11"



# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg: str, code: int = 1) -> None:
    log(f"ERROR: {msg}")
    sys.exit(code)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], **kw)


def child_priority() -> None:
    """preexec_fn of the brokers and hmq-bench: the same raised priority for all of them, so that
    builds or tests running beside the benchmark disturb it less."""
    if PRIORITY["nice"]:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, PRIORITY["nice"])
        except OSError:
            pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def mqtt_probe(port: int, timeout: float) -> str | None:
    """One MQTT 3.1.1 CONNECT/CONNACK/DISCONNECT on 127.0.0.1:port; None if the broker answered,
    else what went wrong."""
    cid = b"bench-compare-probe"
    body = b"\x00\x04MQTT\x04\x02" + KEEPALIVE.to_bytes(2, "big") + len(cid).to_bytes(2, "big") + cid
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(bytes([0x10, len(body)]) + body)
            ack = b""
            while len(ack) < 4:
                chunk = sock.recv(4 - len(ack))
                if not chunk:
                    return "connection closed before CONNACK"
                ack += chunk
            if ack[0] != 0x20 or ack[3] != 0:
                return f"unexpected answer to CONNECT: {ack.hex()}"
            sock.sendall(b"\xe0\x00")
            return None
    except OSError as e:
        return f"no CONNACK within {timeout:.0f} s ({e})"


def fmt_bytes(n: float) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n:g} B" if isinstance(n, float) else f"{n} B"


def fmt_num(x, digits: int = 0) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and digits:
        return f"{x:,.{digits}f}"
    return f"{round(x):,}"


def fmt_us(us) -> str:
    if us is None:
        return "–"
    ms = us / 1000.0
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    return f"{ms:,.0f} ms"


def fmt_ratio(r) -> str:
    return "–" if r is None else f"{r:.2f}×"


def get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d or d[p] is None:
            return default
        d = d[p]
    return d
