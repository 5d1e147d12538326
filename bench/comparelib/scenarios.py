"""The scenario list of bench/compare: what each run asks hmq-bench to do."""

from __future__ import annotations

from dataclasses import dataclass, field

from .common import KEEPALIVE, die, fmt_bytes


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str  # file name and --scenarios key
    family: str  # --scenarios also accepts the family (mostly the text before the first '-')
    title: str
    mode: str  # hmq-bench subcommand
    kind: str  # throughput | latency | conn
    qos: int = 1
    size: int = 16
    rate: float = 0  # per publisher, 0 = unlimited; the fixed-load scenario computes its own
    capped: bool = False  # offered load limited by --rate: all brokers may just keep up
    extra: list = field(default_factory=list)
    duration: int = 8
    warmup: int = 2
    drain: int = 8  # at most: hmq-bench stops as soon as every delivery arrived
    clients: int = 0  # conn only
    worker_threads: int | None = None  # threads-N: hmq restarted with workerThreads=N
    full_only: bool = False
    persistent: bool = False  # clean session 0 for every client (hmq-bench --persistent)

    def describe(self, rate: float | None = None) -> str:
        rate = self.rate if rate is None else rate
        if self.name == "fixed-load" and not rate:
            rate = "half of Mosquitto's p2p-q1 maximum"
        elif not rate:
            rate = "unlimited"
        else:
            rate = f"{rate:g} msg/s per publisher"
        if self.kind == "conn":
            return f"{self.clients} idle connections (keepalive {KEEPALIVE} s), held {self.duration} s"
        sessions = ", persistent sessions (clean session 0)" if self.persistent else ""
        return (f"QoS {self.qos}, {fmt_bytes(self.size)} payload, {rate}{sessions}, "
                f"{self.duration} s measured")

    def client_ids(self) -> list[str]:
        """hmq-bench's client ids for this run (<prefix>-<pub|sub>-<i>, prefix = name): the
        sessions a persistent run leaves on the broker."""
        opts = dict(zip(self.extra[::2], self.extra[1::2]))
        pubs = int(opts.get("--pairs") or opts.get("--publishers") or 0)
        subs = int(opts.get("--pairs") or opts.get("--subscribers") or 1)
        return [f"{self.name}-pub-{i}" for i in range(pubs)] + \
               [f"{self.name}-sub-{i}" for i in range(subs)]


def scenario_list(full: bool, ncpu: int) -> list[Scenario]:
    s = [
        # Fresh broker first: RSS per idle connection is measured before anything else ran.
        Scenario("conn", "conn", "10,000 idle connections", "conn", "conn", duration=5, drain=1,
                 warmup=0, clients=10_000, extra=["--clients", "10000", "--connect-rate", "5000"]),
        Scenario("p2p-q1", "p2p", "p2p: 500 pairs, QoS 1, unlimited rate", "p2p", "throughput",
                 extra=["--pairs", "500"]),
        Scenario("p2p-q2", "p2p", "p2p: 500 pairs, QoS 2, unlimited rate", "p2p", "throughput",
                 qos=2, extra=["--pairs", "500"]),
        Scenario("fanout-q1", "fanout", "fanout: 5 publishers -> 1000 subscribers, QoS 1, unlimited rate",
                 "fanout", "throughput",
                 extra=["--publishers", "5", "--subscribers", "1000"]),
        Scenario("fanout-64k", "fanout", "fanout: 5 publishers -> 1000 subscribers, QoS 1, 64 KiB",
                 "fanout", "throughput", size=65536, rate=2, capped=True,
                 extra=["--publishers", "5", "--subscribers", "1000"]),
        Scenario("fanin-q1", "fanin", "fanin: 1000 publishers -> 1 subscriber, QoS 1, unlimited rate",
                 "fanin", "throughput", extra=["--publishers", "1000"]),
        Scenario("fanin-share", "fanin",
                 "fanin: 1000 publishers -> $share group of 10, QoS 1, unlimited rate",
                 "fanin", "throughput",
                 extra=["--publishers", "1000", "--shared-group", "bench", "--subscribers", "10"]),
        Scenario("fixed-load", "fixed", "p2p at half of Mosquitto's p2p-q1 maximum: latency",
                 "p2p", "latency", capped=True, extra=["--pairs", "500"]),
        # Persistent sessions: the in-memory brokers and the variants with a durable store
        # (the `persist` family; rumqttd has no persistence and runs none of it).
        Scenario("p2p-q1-persist", "persist",
                 "p2p: 500 pairs, QoS 1, unlimited rate, persistent sessions", "p2p",
                 "throughput", persistent=True, extra=["--pairs", "500"]),
        # One subscriber behind 1000 publishers: its queue is where messages wait, the case
        # where a durable store has the most to write.
        Scenario("fanin-q1-persist", "persist",
                 "fanin: 1000 publishers -> 1 subscriber, QoS 1, unlimited rate, persistent "
                 "sessions", "fanin", "throughput", persistent=True,
                 extra=["--publishers", "1000"]),
        # QoS 0 at an unlimited rate floods the broker (nothing slows the publishers but TCP):
        # last, so that the backlog it leaves cannot disturb the other runs.
        Scenario("p2p-q0", "p2p", "p2p: 500 pairs, QoS 0, unlimited rate", "p2p", "throughput",
                 qos=0, drain=2, extra=["--pairs", "500"]),
    ]
    threads = [1, 2] + ([n for n in (4, 8, 16) if n <= ncpu] if full else [])
    for n in threads:
        s.append(Scenario(f"threads-{n}", "threads",
                          f"hmq p2p (500 pairs, QoS 1, unlimited) with workerThreads={n}", "p2p",
                          "throughput", extra=["--pairs", "500"], worker_threads=n))
    if full:
        s += [
            Scenario("p2p-1000", "p2p", "p2p: 1000 pairs, QoS 1, unlimited rate", "p2p",
                     "throughput", extra=["--pairs", "1000"], full_only=True),
            Scenario("p2p-1k", "p2p", "p2p: 500 pairs, QoS 1, 1 KiB payload", "p2p", "throughput",
                     size=1024, extra=["--pairs", "500"], full_only=True),
            Scenario("p2p-16k", "p2p", "p2p: 100 pairs, QoS 1, 16 KiB payload", "p2p",
                     "throughput", size=16384, extra=["--pairs", "100"], full_only=True),
            Scenario("fanout-q2", "fanout", "fanout: 5 publishers -> 1000 subscribers, QoS 2",
                     "fanout", "throughput", qos=2, rate=20, capped=True,
                     extra=["--publishers", "5", "--subscribers", "1000"], full_only=True),
            Scenario("fanout-q0", "fanout", "fanout: 5 publishers -> 1000 subscribers, QoS 0",
                     "fanout", "throughput", qos=0, rate=20, capped=True, drain=2,
                     extra=["--publishers", "5", "--subscribers", "1000"], full_only=True),
            Scenario("fanin-q2", "fanin", "fanin: 1000 publishers -> 1 subscriber, QoS 2", "fanin",
                     "throughput", qos=2, rate=10, capped=True, extra=["--publishers", "1000"],
                     full_only=True),
            Scenario("p2p-q2-persist", "persist",
                     "p2p: 500 pairs, QoS 2, unlimited rate, persistent sessions", "p2p",
                     "throughput", qos=2, persistent=True, extra=["--pairs", "500"],
                     full_only=True),
            Scenario("conn-50k", "conn", "50,000 idle connections", "conn", "conn", duration=5,
                     drain=1, warmup=0, clients=50_000,
                     extra=["--clients", "50000", "--connect-rate", "5000"], full_only=True),
        ]
    return s


def select(scenarios: list[Scenario], wanted: str | None, threads_flag: bool, no_threads: bool):
    if wanted:
        keys = {w.strip() for w in wanted.split(",") if w.strip()}
        known = {s.name for s in scenarios} | {s.family for s in scenarios}
        unknown = keys - known
        if unknown:
            die(f"unknown scenario(s) {sorted(unknown)}; known: {sorted(known)}", code=2)
        out = [s for s in scenarios if s.name in keys or s.family in keys
               or (threads_flag and s.family == "threads")]
    else:
        out = list(scenarios)
    if no_threads:
        out = [s for s in out if s.family != "threads"]
    return out
