"""Load for the rolling-upgrade test (cluster_rolling.sh): persistent QoS 1 subscribers and
publishers at a fixed rate, each client reconnecting to a random node after every disconnect (as
through a Kubernetes Service).

Subscriber i (client id PREFIX-sub-i, clean session 0) subscribes to PREFIX/i at QoS 1 once; a later
connection that finds no session (session present 0) subscribes again and is counted as a fresh
session. Publishers send QoS 1 messages "<publisher>:<n>" round robin over the subscribers' topics,
RATE per second in all; a message counts as acknowledged when its PUBACK arrives. A publisher that
is disconnected starts over with a new connection (nothing is resent, so every acknowledged
message was published exactly once).

It runs until the file STOP exists (or --max-seconds), then waits until every acknowledged message
has arrived or nothing arrived for --settle seconds, and writes a JSON report: published,
acknowledged, delivered (distinct), lost (acknowledged, never delivered), duplicates (a second
copy; with_dup: it carried DUP), fresh_sessions, reconnects. Needs paho-mqtt 2.x.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import paho.mqtt.client as mqtt


def new_client(client_id, clean):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean,
        protocol=mqtt.MQTTv311,
    )
    c.reconnect_delay_set(min_delay=0.1, max_delay=1)
    return c


class Subscriber:
    def __init__(self, prefix, i, hosts, port, stats):
        self.i = i
        self.topic = f"{prefix}/{i}"
        self.hosts = hosts
        self.port = port
        self.stats = stats
        self.seen = {}
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = new_client(f"{prefix}-sub-{i}", False)
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect
        self.client.on_connect_fail = self.on_connect_fail
        self.client.on_message = self.on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.first = True

    def start(self):
        self.client.connect_async(random.choice(self.hosts), self.port, keepalive=30)
        self.client.loop_start()

    def on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            return
        if not flags.session_present:
            if not self.first:
                self.stats.count("fresh_sessions")
            client.subscribe(self.topic, qos=1)
        self.first = False

    def on_disconnect(self, client, userdata, flags, reason, properties):
        if self.stats.stopping:
            return
        self.stats.count("reconnects")
        # The next attempt goes to a random node. paho reconnects to the host it was given and
        # refuses to change `host` from its own callbacks, so its private `_host` is set.
        client._host = random.choice(self.hosts)

    def on_connect_fail(self, client, userdata):
        # That node is down (being restarted): the next attempt goes to a random one.
        client._host = random.choice(self.hosts)

    def on_message(self, client, userdata, msg):
        key = msg.payload.decode()
        with self.lock:
            if key in self.seen:
                self.stats.count("duplicates")
                if msg.dup:
                    self.stats.count("duplicates_with_dup")
            else:
                self.seen[key] = True
                self.stats.delivered(key)


class Publisher(threading.Thread):
    def __init__(self, name, hosts, port, topics, rate, stop, stats):
        super().__init__(daemon=True)
        self.name_ = name
        self.hosts = hosts
        self.port = port
        self.topics = topics
        self.rate = rate
        self.stop = stop
        self.stats = stats
        self.n = 0

    def connect(self):
        while not self.stop.is_set():
            pending = {}
            lock = threading.Lock()
            c = new_client("", True)
            up = threading.Event()
            down = threading.Event()

            def on_connect(client, userdata, flags, reason, properties):
                if not reason.is_failure:
                    up.set()

            def on_publish(client, userdata, mid, reason, properties):
                with lock:
                    key = pending.pop(mid, None)
                if key is not None:
                    self.stats.acked(key)

            c.on_connect = on_connect
            c.on_publish = on_publish
            c.on_disconnect = lambda *a: down.set()
            try:
                c.connect(random.choice(self.hosts), self.port, keepalive=30)
            except OSError:
                time.sleep(0.1)
                continue
            c.loop_start()
            if up.wait(3):
                return c, pending, lock, down
            c.loop_stop()
            time.sleep(0.1)
        return None

    def run(self):
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        conn = self.connect()
        while conn and not self.stop.is_set():
            c, pending, lock, down = conn
            if down.is_set():
                c.loop_stop()
                self.stats.count("reconnects")
                conn = self.connect()
                continue
            topic = self.topics[self.n % len(self.topics)]
            key = f"{self.name_}:{self.n}"
            self.n += 1
            with lock:
                info = c.publish(topic, key.encode(), qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    pending[info.mid] = key
            self.stats.published(key, topic)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        if conn:
            time.sleep(1)  # the last PUBACKs
            conn[0].disconnect()
            conn[0].loop_stop()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.stopping = False
        self.counts = {"fresh_sessions": 0, "reconnects": 0, "duplicates": 0, "duplicates_with_dup": 0}
        self.topic_of = {}
        self.acked_keys = set()
        self.delivered_keys = set()

    def count(self, what):
        with self.lock:
            self.counts[what] += 1

    def published(self, key, topic):
        with self.lock:
            self.topic_of[key] = topic

    def acked(self, key):
        with self.lock:
            self.acked_keys.add(key)

    def delivered(self, key):
        with self.lock:
            self.delivered_keys.add(key)

    def missing(self):
        with self.lock:
            return len(self.acked_keys - self.delivered_keys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", required=True)
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--prefix", default="roll", help="client ids PREFIX-sub-i, topics PREFIX/i")
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--rate", type=float, default=200.0, help="messages per second in all")
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--max-seconds", type=float, default=240)
    ap.add_argument("--settle", type=float, default=20)
    a = ap.parse_args()
    hosts = a.hosts.split(",")
    stats = Stats()
    subs = [Subscriber(a.prefix, i, hosts, a.port, stats) for i in range(a.subscribers)]
    for s in subs:
        s.start()
    deadline = time.monotonic() + 30
    for s in subs:
        if not s.subscribed.wait(max(0.1, deadline - time.monotonic())):
            sys.exit(f"subscriber {s.i} got no SUBACK within 30 s")
    time.sleep(2)  # the routes reach every node
    stop = threading.Event()
    topics = [s.topic for s in subs]
    pubs = [
        Publisher(f"p{k}", hosts, a.port, topics, a.rate / a.publishers, stop, stats)
        for k in range(a.publishers)
    ]
    began = time.monotonic()
    for p in pubs:
        p.start()
    open(a.ready_file, "w").close()
    end = time.monotonic() + a.max_seconds
    while not os.path.exists(a.stop_file) and time.monotonic() < end:
        time.sleep(0.2)
    stop.set()
    stats.publish_seconds = time.monotonic() - began
    for p in pubs:
        p.join(10)
    # Everything acknowledged arrives, or nothing more arrives for --settle seconds.
    last, quiet_since = -1, time.monotonic()
    while stats.missing() > 0:
        n = len(stats.delivered_keys)
        if n != last:
            last, quiet_since = n, time.monotonic()
        elif time.monotonic() - quiet_since > a.settle:
            break
        time.sleep(0.2)
    time.sleep(1)  # a duplicate would come now
    stats.stopping = True
    for s in subs:
        s.client.disconnect()
        s.client.loop_stop()
    with stats.lock:
        lost = sorted(stats.acked_keys - stats.delivered_keys)
        report = {
            "subscribers": a.subscribers,
            "publish_rate": round(len(stats.topic_of) / max(0.001, stats.publish_seconds), 1),
            "published": len(stats.topic_of),
            "acknowledged": len(stats.acked_keys),
            "delivered": len(stats.delivered_keys),
            "lost": len(lost),
            "lost_examples": [(k, stats.topic_of[k]) for k in lost[:10]],
            **stats.counts,
        }
    with open(a.report, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
