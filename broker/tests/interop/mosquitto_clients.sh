#!/usr/bin/env bash
# Interop test: Debian's mosquitto_pub / mosquitto_sub (2.0.11) against the hmq release binary.
#
# Starts its own hmq on 127.0.0.1 and a free port (stopped on exit, even on failure), then checks:
# QoS 0/1/2 delivery and QoS downgrade, retained messages (retain flag on new subscriptions, not on
# live delivery, deletion with an empty payload), MQTT 3.1 and 3.1.1 clients in all combinations,
# will messages (on SIGKILL of the client; with will-retain; none after a clean DISCONNECT),
# persistent sessions (QoS 1/2 queued while offline), wildcard subscriptions (+, #, overlapping).
#
# Usage: broker/tests/interop/mosquitto_clients.sh   (HMQ_BIN overrides the broker binary)
# Every client runs with a timeout (-W plus `timeout`), so nothing can hang.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

command -v mosquitto_pub >/dev/null || die "mosquitto_pub not installed (apt-get install mosquitto-clients)"
command -v mosquitto_sub >/dev/null || die "mosquitto_sub not installed (apt-get install mosquitto-clients)"

interop_setup
MQ=(-h 127.0.0.1 -p "$BROKER_PORT")
declare -A SUB_PID=()

# Every message a subscriber receives is printed as one line: MSG|retain|qos|topic|payload
FORMAT='MSG|%r|%q|%t|%p'

# pub ARGS...: mosquitto_pub against the broker, bounded in time; fails the check on error.
pub() {
    timeout 15 mosquitto_pub "${MQ[@]}" "$@" ||
        die "mosquitto_pub $* exited with status $?"
}

# sub_start NAME ARGS...: starts mosquitto_sub in the background (output in $WORK/NAME.out) and
# waits until the broker has acknowledged its subscriptions. Give it -C n: it exits after n
# messages, or after 10 s (-W) with an error.
sub_start() {
    local name=$1 i
    shift
    # stdbuf: line-buffered stdout, so the debug line "Subscribed (mid: ..." shows up at once.
    timeout 20 stdbuf -oL mosquitto_sub "${MQ[@]}" -d -W 10 -F "$FORMAT" "$@" \
        >"$WORK/$name.out" 2>&1 &
    SUB_PID[$name]=$!
    for ((i = 0; i < 100; i++)); do
        grep -q '^Subscribed (mid' "$WORK/$name.out" && return 0
        # Already done (e.g. queued messages arrived before the SUBACK): sub_expect judges.
        alive "${SUB_PID[$name]}" || return 0
        sleep 0.1
    done
    cat "$WORK/$name.out" >&2
    die "subscriber $name ($*) did not get its SUBACK within 10 s"
}

# sub_granted NAME: the granted QoS list printed by mosquitto_sub, e.g. "1" or "0, 2".
sub_granted() {
    sed -n 's/^Subscribed (mid: [0-9]*): //p' "$WORK/$1.out"
}

# sub_expect NAME LINE...: waits for subscriber NAME to exit, then compares the messages it got
# (retain|qos|topic|payload per line, in order) with the expected lines.
sub_expect() {
    local name=$1 rc=0
    shift
    wait "${SUB_PID[$name]}" || rc=$?
    local got
    got=$(grep '^MSG|' "$WORK/$name.out" | cut -c5- || true)
    local want
    want=$(printf '%s\n' "$@")
    if [[ $got != "$want" || $rc != 0 ]]; then
        echo "subscriber $name: exit status $rc (27 = timed out waiting for messages)" >&2
        echo "expected messages (retain|qos|topic|payload):" >&2
        printf '    %s\n' "$@" >&2
        echo "received:" >&2
        printf '%s\n' "$got" | sed 's/^/    /' >&2
        echo "mosquitto_sub -d output:" >&2
        sed 's/^/    | /' "$WORK/$name.out" >&2
        die "subscriber $name did not receive exactly the expected messages"
    fi
}

expect_eq() {
    [[ $1 == "$2" ]] || die "$3: expected '$2', got '$1'"
}

# --- checks ---------------------------------------------------------------------------------

qos_delivery() {
    local q
    for q in 0 1 2; do
        sub_start "qos$q" -q "$q" -t "it/qos/$q" -C 5
        expect_eq "$(sub_granted "qos$q")" "$q" "granted QoS for a QoS $q subscription"
        pub -q "$q" -t "it/qos/$q" -m "m1"
        pub -q "$q" -t "it/qos/$q" -m "m2"
        # -l: three messages over one connection
        printf 'm3\nm4\nm5\n' | pub -q "$q" -t "it/qos/$q" -l
        sub_expect "qos$q" "0|$q|it/qos/$q|m1" "0|$q|it/qos/$q|m2" "0|$q|it/qos/$q|m3" \
            "0|$q|it/qos/$q|m4" "0|$q|it/qos/$q|m5"
    done
}

qos_downgrade() {
    # Delivered QoS = min(publish QoS, granted QoS).
    sub_start down -q 1 -t it/down -C 3
    pub -q 2 -t it/down -m two
    pub -q 1 -t it/down -m one
    pub -q 0 -t it/down -m zero
    sub_expect down "0|1|it/down|two" "0|1|it/down|one" "0|0|it/down|zero"
}

retained() {
    pub -q 1 -r -t it/ret -m keep
    # A new subscription gets the retained message with RETAIN=1 ([MQTT-3.3.1-6], -8).
    sub_start ret-new -q 1 -t it/ret -C 1
    sub_expect ret-new "1|1|it/ret|keep"

    # Live delivery of a retained PUBLISH has RETAIN=0 ([MQTT-3.3.1-9]); an empty retained
    # PUBLISH is delivered as normal ([MQTT-3.3.1-10]) and deletes the retained message.
    sub_start ret-live -q 1 -t it/ret -C 3
    pub -q 1 -r -t it/ret -m new
    pub -q 1 -r -n -t it/ret
    sub_expect ret-live "1|1|it/ret|keep" "0|1|it/ret|new" "0|1|it/ret|"

    # After the deletion a new subscriber gets no retained message: the first thing it receives
    # is a marker published after its SUBACK.
    sub_start ret-gone -q 1 -t it/ret -t it/ret-marker -C 1
    pub -t it/ret-marker -m mark
    sub_expect ret-gone "0|0|it/ret-marker|mark"

    # Retained message replaced: the latest one is kept.
    pub -q 0 -r -t it/ret2 -m first
    pub -q 0 -r -t it/ret2 -m second
    sub_start ret-latest -t it/ret2 -C 1
    sub_expect ret-latest "1|0|it/ret2|second"
}

protocol_versions() {
    # MQTT 3.1 (MQIsdp, level 3) and 3.1.1 (MQTT, level 4), every pairing.
    local sv pv n=0
    for sv in mqttv31 mqttv311; do
        for pv in mqttv31 mqttv311; do
            n=$((n + 1))
            sub_start "ver$n" -V "$sv" -i "it-sub-$n-$sv" -q 2 -t "it/ver/$sv/$pv" -C 3
            expect_eq "$(sub_granted "ver$n")" "2" "granted QoS for a $sv subscription"
            pub -V "$pv" -i "it-pub-$n-$pv" -q 0 -t "it/ver/$sv/$pv" -m "zero"
            pub -V "$pv" -i "it-pub-$n-$pv" -q 1 -t "it/ver/$sv/$pv" -m "one"
            pub -V "$pv" -i "it-pub-$n-$pv" -q 2 -t "it/ver/$sv/$pv" -m "two"
            sub_expect "ver$n" "0|0|it/ver/$sv/$pv|zero" "0|1|it/ver/$sv/$pv|one" \
                "0|2|it/ver/$sv/$pv|two"
        done
    done
    # Retained message published with 3.1 and read with 3.1.
    pub -V mqttv31 -i it-pub-v31-ret -q 1 -r -t it/ver/ret -m kept31
    sub_start ver-ret -V mqttv31 -i it-sub-v31-ret -q 1 -t it/ver/ret -C 1
    sub_expect ver-ret "1|1|it/ver/ret|kept31"
}

# dying_client NAME VERSION WILL-ARGS...: a client with a will, connected and subscribed, in the
# background; its pid in DYING_PID. No `timeout` wrapper: SIGKILL must hit mosquitto_sub itself
# (stdbuf execs it, so $! is mosquitto_sub's pid).
dying_client() {
    local name=$1 version=$2 i
    shift 2
    stdbuf -oL mosquitto_sub "${MQ[@]}" -d -V "$version" -i "$name" -k 60 -W 30 -t "it/dummy/$name" "$@" \
        >"$WORK/$name.out" 2>&1 &
    DYING_PID=$!
    for ((i = 0; i < 100; i++)); do
        grep -q '^Subscribed (mid' "$WORK/$name.out" && return 0
        sleep 0.1
    done
    cat "$WORK/$name.out" >&2
    die "client $name did not connect"
}

will_messages() {
    # Will published when the client dies without DISCONNECT (SIGKILL: the broker sees the TCP
    # connection close) [MQTT-3.1.2-8]; delivered QoS = min(will QoS, granted QoS).
    sub_start will-watch -q 2 -t 'it/will/+' -C 1
    dying_client it-dying mqttv311 --will-topic it/will/a --will-payload gone --will-qos 1
    kill -KILL "$DYING_PID"
    wait "$DYING_PID" 2>/dev/null || true
    sub_expect will-watch "0|1|it/will/a|gone"

    # Same with an MQTT 3.1 client.
    sub_start will-watch31 -q 1 -t 'it/will31/+' -C 1
    dying_client it-dying31 mqttv31 --will-topic it/will31/a --will-payload gone31 --will-qos 2
    kill -KILL "$DYING_PID"
    wait "$DYING_PID" 2>/dev/null || true
    sub_expect will-watch31 "0|1|it/will31/a|gone31"

    # Will retain: live subscribers get it with RETAIN=0, later subscribers get it retained.
    sub_start will-watch-r -q 1 -t it/will-r/a -C 1
    dying_client it-dying-r mqttv311 --will-topic it/will-r/a --will-payload kept \
        --will-qos 1 --will-retain
    kill -KILL "$DYING_PID"
    wait "$DYING_PID" 2>/dev/null || true
    sub_expect will-watch-r "0|1|it/will-r/a|kept"
    sub_start will-late -q 1 -t it/will-r/a -C 1
    sub_expect will-late "1|1|it/will-r/a|kept"

    # No will after a clean DISCONNECT [MQTT-3.1.2-10]: the watcher's first message must be the
    # marker published after the polite client has left.
    sub_start will-none -q 1 -t it/will-c/a -t it/will-c/marker -C 1
    pub -i it-polite --will-topic it/will-c/a --will-payload bad --will-qos 1 -t it/other -m x
    sleep 0.5
    pub -t it/will-c/marker -m mark
    sub_expect will-none "0|0|it/will-c/marker|mark"
}

persistent_session() {
    # Subscribe with clean session off, leave (-E: exit once the SUBACK is in).
    timeout 15 mosquitto_sub "${MQ[@]}" -c -i it-persist -q 1 -t it/persist -E ||
        die "persistent subscriber could not subscribe (status $?)"
    # Published while it is offline: queued for the session (QoS 2 downgraded to the granted 1).
    pub -q 1 -t it/persist -m p1
    pub -q 2 -t it/persist -m p2
    pub -q 1 -t it/persist -m p3
    # Back with the same client id: the queued messages arrive, in order.
    sub_start persist -c -i it-persist -q 1 -t it/persist -C 3
    sub_expect persist "0|1|it/persist|p1" "0|1|it/persist|p2" "0|1|it/persist|p3"
    # The same client id with clean session on discards the session.
    timeout 15 mosquitto_sub "${MQ[@]}" -i it-persist -q 1 -t it/persist -E ||
        die "clean-session reconnect failed (status $?)"
}

wildcards() {
    sub_start plus -q 1 -t 'a/+/c' -C 4
    sub_start hash -q 1 -t 'a/#' -C 7
    # Overlapping subscriptions of one client: one copy per message.
    sub_start both -q 1 -t 'a/+/c' -t 'a/#' -C 7
    local t
    for t in a/b/c a/x/c a/b/d a a//c a/b/c/d b/b/c ab/b/c a/end/c; do
        pub -q 1 -t "$t" -m "to $t"
    done
    sub_expect plus "0|1|a/b/c|to a/b/c" "0|1|a/x/c|to a/x/c" "0|1|a//c|to a//c" \
        "0|1|a/end/c|to a/end/c"
    local all=("0|1|a/b/c|to a/b/c" "0|1|a/x/c|to a/x/c" "0|1|a/b/d|to a/b/d" "0|1|a|to a"
        "0|1|a//c|to a//c" "0|1|a/b/c/d|to a/b/c/d" "0|1|a/end/c|to a/end/c")
    sub_expect hash "${all[@]}"
    sub_expect both "${all[@]}"
}

echo "mosquitto clients: $({ mosquitto_sub --help || true; } | sed -n 2p)"
check "QoS 0, 1 and 2 delivery" qos_delivery
check "QoS downgrade to the granted QoS" qos_downgrade
check "retained messages (new subscriber, live delivery, deletion)" retained
check "MQTT 3.1 and 3.1.1 clients" protocol_versions
check "will messages (SIGKILL, 3.1, will retain, none after DISCONNECT)" will_messages
check "persistent session: QoS 1/2 queued while offline" persistent_session
check "wildcard subscriptions a/+/c, a/#, overlapping" wildcards
check_summary "mosquitto_clients"
