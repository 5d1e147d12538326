#!/usr/bin/env python3
"""Interop test: paho-mqtt 2.x (PyPI) against a running hmq broker on 127.0.0.1.

Usage: python3 paho_test.py PORT    (run.sh starts a fresh hmq and passes its port)

Checks: QoS 0/1/2 round trips (payloads, counts, order, no duplicates at QoS 2, nothing lost at
QoS 1/2), QoS downgrade, retained messages (retain flag True for a new subscription, False on live
delivery, deletion), will message on an unexpected close and none after a clean disconnect,
persistent sessions (clean_session=False: subscription kept, QoS 1/2 queued while offline,
session_present), MQTT 3.1 clients. Every wait is bounded; exits 1 if any check fails.
"""

import sys
import threading
import time
import traceback
from typing import ClassVar

import paho.mqtt
import paho.mqtt.client as mqtt

HOST = "127.0.0.1"
TIMEOUT = 10.0  # seconds, for every wait
PORT = 0  # set from argv


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


class Client:
    """A paho client with its network loop in a thread, recording everything it receives."""

    all_clients: ClassVar[list["Client"]] = []  # every client made, for cleanup after a check

    def __init__(self, client_id, *, clean_session=True, protocol=mqtt.MQTTv311, will=None):
        self.client_id = client_id
        self.cond = threading.Condition()
        self.messages = []  # mqtt.MQTTMessage, in arrival order
        self.subacks = {}  # mid -> [granted QoS or 128]
        self.connect_rc = None
        self.session_present = None
        self.disconnected = False
        self.c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=protocol,
        )
        # No automatic reconnect: a lost connection must stay lost.
        self.c.reconnect_delay_set(min_delay=60, max_delay=60)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_disconnect = self._on_disconnect
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos=qos, retain=retain)
        Client.all_clients.append(self)
        self.c.connect(HOST, PORT, keepalive=30)
        self.c.loop_start()
        self._wait(lambda: self.connect_rc is not None, f"{client_id}: no CONNACK")
        expect(not self.connect_rc.is_failure, f"{client_id}: CONNACK refused: {self.connect_rc}")

    # callbacks (paho's network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.session_present = flags.session_present
            self.connect_rc = reason_code
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self.cond:
            self.subacks[mid] = [rc.value for rc in reason_code_list]
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def _wait(self, predicate, message, timeout=TIMEOUT):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise CheckFailed(f"{message} (after {timeout:.0f} s)")

    def subscribe(self, topics):
        """topics: [(filter, qos)]; returns the granted QoS list from the SUBACK."""
        rc, mid = self.c.subscribe(topics)
        expect(rc == mqtt.MQTT_ERR_SUCCESS, f"{self.client_id}: subscribe failed: {rc}")
        self._wait(lambda: mid in self.subacks, f"{self.client_id}: no SUBACK for {topics}")
        return self.subacks[mid]

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        expect(info.rc == mqtt.MQTT_ERR_SUCCESS, f"{self.client_id}: publish failed: {info.rc}")
        return info

    def publish_all(self, items):
        """items: [(topic, payload, qos, retain)]; waits until every one is acknowledged."""
        infos = [self.publish(*item) for item in items]
        deadline = time.monotonic() + TIMEOUT
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            expect(info.is_published(), f"{self.client_id}: publish {info.mid} not acknowledged")

    def wait_messages(self, n, topic_prefix="", timeout=TIMEOUT, expected=None):
        """Waits until n messages on topics starting with topic_prefix arrived; returns them.

        expected: the payloads due, to name the missing ones on failure."""

        def matching():
            return [m for m in self.messages if m.topic.startswith(topic_prefix)]

        with self.cond:
            self.cond.wait_for(lambda: len(matching()) >= n, timeout)
            got = matching()
        expect(
            len(got) >= n,
            f"{self.client_id}: expected {n} messages on {topic_prefix!r}*, got {len(got)}"
            + (f"; missing {missing(got, expected)}" if expected else f": {describe(got)}"),
        )
        return got

    def received(self, topic_prefix=""):
        with self.cond:
            return [m for m in self.messages if m.topic.startswith(topic_prefix)]

    def disconnect(self):
        """Clean DISCONNECT, then stop the network thread."""
        self.c.disconnect()
        self._wait(lambda: self.disconnected, f"{self.client_id}: disconnect did not complete")
        self.c.loop_stop()

    def kill(self):
        """Unexpected close: stop the network thread and close the socket, no DISCONNECT."""
        self.c.loop_stop()
        sock = self.c.socket()
        expect(sock is not None, f"{self.client_id}: no socket to close")
        sock.close()

    @classmethod
    def close_all(cls):
        for client in cls.all_clients:
            try:
                client.c.loop_stop()
                sock = client.c.socket()
                if sock is not None:
                    sock.close()
            except OSError:  # best effort cleanup
                pass
        cls.all_clients.clear()


def describe(messages, limit=8):
    """Short text for a list of messages (the first `limit` of them)."""
    text = ", ".join(
        f"({m.topic} {m.payload!r} qos={m.qos} retain={int(m.retain)} dup={int(m.dup)})"
        for m in messages[:limit]
    )
    if len(messages) > limit:
        text += f", ... ({len(messages) - limit} more)"
    return text or "nothing"


def missing(messages, expected, limit=8):
    """The expected payloads not among messages, as short text."""
    got = {m.payload for m in messages}
    lost = [p for p in expected if p not in got]
    text = ", ".join(repr(p) for p in lost[:limit])
    return text + (f", ... ({len(lost)} in all)" if len(lost) > limit else "")


def settle():
    """Gives late (duplicate or unexpected) deliveries a moment to show up."""
    time.sleep(0.5)


# --- checks -----------------------------------------------------------------------------------


def check_qos_round_trip():
    count = 100  # more than the default in-flight window (32): exercises the queue behind it
    for qos in (0, 1, 2):
        topic = f"paho/qos/{qos}"
        sub = Client(f"paho-sub-q{qos}")
        granted = sub.subscribe([(topic, qos)])
        expect(granted == [qos], f"QoS {qos}: granted {granted}")
        pub = Client(f"paho-pub-q{qos}")
        payloads = [f"q{qos}-{i:03d}".encode() for i in range(count)]
        pub.publish_all([(topic, p, qos, False) for p in payloads])
        sub.wait_messages(count, topic, expected=payloads)
        settle()
        got = sub.received(topic)
        received = [m.payload for m in got]
        expect(all(m.qos == qos for m in got), f"QoS {qos}: wrong QoS delivered: {describe(got)}")
        expect(not any(m.retain for m in got), f"QoS {qos}: RETAIN set on live delivery")
        unknown = set(received) - set(payloads)
        expect(not unknown, f"QoS {qos}: unexpected payloads {sorted(unknown)}")
        first_seen = list(dict.fromkeys(received))
        expect(set(received) == set(payloads), f"QoS {qos}: lost {missing(got, payloads)}")
        expect(first_seen == payloads, f"QoS {qos}: order not preserved: {first_seen[:10]}...")
        dups = len(received) - len(first_seen)
        if qos in (0, 2):
            expect(dups == 0, f"QoS {qos}: {dups} duplicate deliveries")
        elif dups:
            print(f"     note: QoS 1 had {dups} duplicate deliveries (allowed at QoS 1)")
        sub.disconnect()
        pub.disconnect()


def check_qos_downgrade():
    sub = Client("paho-sub-down")
    expect(sub.subscribe([("paho/down", 1)]) == [1], "downgrade: subscription not granted QoS 1")
    pub = Client("paho-pub-down")
    pub.publish_all([("paho/down", b"two", 2, False), ("paho/down", b"zero", 0, False)])
    got = sub.wait_messages(2, "paho/down")
    settle()
    got = sub.received("paho/down")
    # Sorted: the order between a QoS 2 and a QoS 0 message is not specified (a broker may
    # forward a QoS 2 message on PUBLISH or only on PUBREL).
    expect(
        sorted((m.payload, m.qos) for m in got) == [(b"two", 1), (b"zero", 0)],
        f"downgrade: delivered QoS must be min(publish, granted): {describe(got)}",
    )
    sub.disconnect()
    pub.disconnect()


def check_retained():
    pub = Client("paho-pub-ret")
    pub.publish_all([("paho/ret/a", b"keep", 1, True)])
    sub = Client("paho-sub-ret")
    sub.subscribe([("paho/ret/+", 1)])
    m = sub.wait_messages(1, "paho/ret/")[0]
    expect(
        (m.topic, m.payload, m.retain, m.qos) == ("paho/ret/a", b"keep", True, 1),
        f"retained: new subscriber got {describe([m])}, expected retain=True payload keep qos 1",
    )
    # Live delivery of a retained publish and of a plain one: retain flag False.
    pub.publish_all([("paho/ret/a", b"live", 1, True), ("paho/ret/b", b"plain", 1, False)])
    got = sub.wait_messages(3, "paho/ret/")[1:]
    expect(
        [(m.topic, m.payload, m.retain) for m in got]
        == [("paho/ret/a", b"live", False), ("paho/ret/b", b"plain", False)],
        f"retained: live delivery must have retain=False: {describe(got)}",
    )
    # The latest retained message replaced the first one.
    sub2 = Client("paho-sub-ret2")
    sub2.subscribe([("paho/ret/a", 1)])
    m = sub2.wait_messages(1, "paho/ret/")[0]
    expect(
        (m.payload, m.retain) == (b"live", True),
        f"retained: expected the latest retained message 'live', got {describe([m])}",
    )
    # An empty retained payload deletes it: a new subscriber gets nothing retained.
    pub.publish_all([("paho/ret/a", b"", 1, True)])
    sub3 = Client("paho-sub-ret3")
    sub3.subscribe([("paho/ret/#", 1), ("paho/ret-marker", 0)])
    pub.publish_all([("paho/ret-marker", b"mark", 0, False)])
    sub3.wait_messages(1, "paho/ret-marker")
    settle()
    got = sub3.received("paho/ret/")
    expect(not got, f"retained: deleted retained message still delivered: {describe(got)}")
    for c in (pub, sub, sub2, sub3):
        c.disconnect()


def check_will():
    watcher = Client("paho-will-watch")
    watcher.subscribe([("paho/will/#", 2)])
    # Socket closed without DISCONNECT: the will is published [MQTT-3.1.2-8].
    dying = Client("paho-dying", will=("paho/will/a", b"gone", 1, False))
    dying.kill()
    m = watcher.wait_messages(1, "paho/will/a")[0]
    expect(
        (m.payload, m.qos, m.retain) == (b"gone", 1, False),
        f"will: got {describe([m])}, expected payload gone qos 1 retain False",
    )
    # Clean disconnect: the will is discarded [MQTT-3.1.2-10].
    polite = Client("paho-polite", will=("paho/will/b", b"bad", 1, False))
    polite.disconnect()
    settle()
    marker = Client("paho-will-marker")
    marker.publish_all([("paho/will/marker", b"mark", 1, False)])
    watcher.wait_messages(1, "paho/will/marker")
    settle()
    got = watcher.received("paho/will/b")
    expect(not got, f"will: published after a clean disconnect: {describe(got)}")
    watcher.disconnect()
    marker.disconnect()


def check_persistent_session():
    cid = "paho-persist"
    first = Client(cid, clean_session=False)
    expect(first.session_present is False, "persistent: session_present True on a new session")
    expect(first.subscribe([("paho/persist/#", 2)]) == [2], "persistent: subscription not QoS 2")
    first.disconnect()

    pub = Client("paho-pub-persist")
    queued = [("paho/persist/q1", f"a{i}".encode(), 1, False) for i in range(5)] + [
        ("paho/persist/q2", f"b{i}".encode(), 2, False) for i in range(5)
    ]
    pub.publish_all(queued)

    # Reconnect without subscribing again: the session (subscription + queue) must be there.
    second = Client(cid, clean_session=False)
    expect(second.session_present is True, "persistent: session_present False on reconnect")
    second.wait_messages(len(queued), "paho/persist/", expected=[p for _, p, _, _ in queued])
    settle()
    got = second.received("paho/persist/")
    for topic, qos in (("paho/persist/q1", 1), ("paho/persist/q2", 2)):
        want = [p for t, p, _, _ in queued if t == topic]
        mine = [m for m in got if m.topic == topic]
        payloads = [m.payload for m in mine]
        expect(all(m.qos == qos for m in mine), f"persistent: wrong QoS: {describe(mine)}")
        if qos == 2:
            expect(payloads == want, f"persistent: QoS 2 queue: got {payloads}, want {want}")
        else:
            expect(
                list(dict.fromkeys(payloads)) == want,
                f"persistent: QoS 1 queue: got {payloads}, want {want}",
            )
    # The subscription still works for live messages.
    pub.publish_all([("paho/persist/live", b"live", 1, False)])
    second.wait_messages(1, "paho/persist/live")
    second.disconnect()

    # clean_session=True discards the session: session_present False [MQTT-3.2.2-1] ...
    clean = Client(cid, clean_session=True)
    expect(clean.session_present is False, "persistent: session_present True with clean session")
    clean.disconnect()
    # ... and a later persistent connect starts from nothing [MQTT-3.1.2-6].
    third = Client(cid, clean_session=False)
    expect(
        third.session_present is False,
        "persistent: session_present True after the session was discarded by a clean session",
    )
    pub.publish_all([("paho/persist/q1", b"after", 1, False)])
    settle()
    got = third.received("paho/persist/")
    expect(not got, f"persistent: discarded subscription still delivers: {describe(got)}")
    third.disconnect()
    # Leave nothing behind: a clean connect removes the session.
    Client(cid, clean_session=True).disconnect()
    pub.disconnect()


def check_mqtt31():
    v31 = mqtt.MQTTv31
    sub = Client("paho-v31-sub", protocol=v31)  # 3.1 client ids: 1 to 23 characters
    expect(sub.subscribe([("paho/v31/#", 2)]) == [2], "3.1: subscription not granted QoS 2")
    pub = Client("paho-v31-pub", protocol=v31)
    pub311 = Client("paho-v311-pub")
    pub.publish_all([(f"paho/v31/q{q}", f"v31-{q}".encode(), q, False) for q in (0, 1, 2)])
    pub311.publish_all([("paho/v31/from311", b"v311", 2, False)])
    sub.wait_messages(4, "paho/v31/")
    settle()
    got = sub.received("paho/v31/")
    expect(
        [(m.topic, m.payload, m.qos) for m in got]
        == [
            ("paho/v31/q0", b"v31-0", 0),
            ("paho/v31/q1", b"v31-1", 1),
            ("paho/v31/q2", b"v31-2", 2),
            ("paho/v31/from311", b"v311", 2),
        ],
        f"3.1: got {describe(got)}",
    )
    # Retained and will with 3.1 clients.
    pub.publish_all([("paho/v31r/a", b"kept", 1, True)])
    late = Client("paho-v31-late", protocol=v31)
    late.subscribe([("paho/v31r/a", 1)])
    m = late.wait_messages(1, "paho/v31r/")[0]
    expect((m.payload, m.retain) == (b"kept", True), f"3.1 retained: got {describe([m])}")
    dying = Client("paho-v31-dying", protocol=v31, will=("paho/v31/will", b"gone", 2, False))
    dying.kill()
    m = sub.wait_messages(1, "paho/v31/will")[0]
    expect((m.payload, m.qos) == (b"gone", 2), f"3.1 will: got {describe([m])}")
    for c in (sub, pub, pub311, late):
        c.disconnect()


CHECKS = [
    ("QoS 0/1/2 round trip, 100 messages each", check_qos_round_trip),
    ("QoS downgrade to the granted QoS", check_qos_downgrade),
    ("retained messages", check_retained),
    ("will on unexpected close, none after clean disconnect", check_will),
    ("persistent session (clean_session=False)", check_persistent_session),
    ("MQTT 3.1 clients", check_mqtt31),
]


def main():
    global PORT
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: paho_test.py PORT   (hmq listening on 127.0.0.1:PORT)")
    PORT = int(sys.argv[1])
    print(f"paho-mqtt {paho.mqtt.__version__}, broker 127.0.0.1:{PORT}")
    if int(paho.mqtt.__version__.split(".")[0]) < 2:
        sys.exit(f"FAIL: paho-mqtt 2.x required, found {paho.mqtt.__version__}")
    failed = []
    for name, fn in CHECKS:
        start = time.monotonic()
        try:
            fn()
            print(f"ok   - {name} ({time.monotonic() - start:.1f} s)", flush=True)
        except CheckFailed as e:
            print(f"FAIL - {name}: {e}", flush=True)
            failed.append(name)
        except Exception:  # noqa: BLE001 -- any error fails the check, with its traceback
            print(f"FAIL - {name}: unexpected error:", flush=True)
            traceback.print_exc()
            failed.append(name)
        finally:
            Client.close_all()
    if failed:
        print(f"paho_test: {len(failed)} check(s) FAILED, {len(CHECKS) - len(failed)} passed:")
        for name in failed:
            print(f"  - {name}")
        sys.exit(1)
    print(f"paho_test: all {len(CHECKS)} checks passed")


if __name__ == "__main__":
    main()
