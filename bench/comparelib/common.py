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

BROKERS = ["mosquitto", "rumqttd", "hmq"]  # the programs; their variants: brokers.VARIANTS
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


def mqtt_probe(port: int, timeout: float, client_id: str = "bench-compare-probe") -> str | None:
    """One MQTT 3.1.1 CONNECT (clean session)/CONNACK/DISCONNECT on 127.0.0.1:port; None if the
    broker answered, else what went wrong. With a persistent session's client id this also ends
    that session: a clean-session CONNECT discards it."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + KEEPALIVE.to_bytes(2, "big") + len(cid).to_bytes(2, "big") + cid
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(bytes([0x10]) + remaining_length(len(body)) + body)
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


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def clear_sessions(port: int, client_ids: list[str], budget_s: float) -> tuple[int, list[str]]:
    """End the persistent sessions a run left behind: one clean-session CONNECT per client id,
    one at a time, within budget_s seconds in all. Returns how many were cleared and what went
    wrong with the others (the ones the budget left out count as failed)."""
    deadline = time.monotonic() + budget_s
    cleared, errors = 0, []
    for i, cid in enumerate(client_ids):
        left = deadline - time.monotonic()
        if left <= 0:
            errors.append(f"{len(client_ids) - i} sessions left: {budget_s:.0f} s budget spent")
            break
        why = mqtt_probe(port, min(5.0, left), cid)
        if why is None:
            cleared += 1
        else:
            errors.append(f"{cid}: {why}")
    return cleared, errors


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
