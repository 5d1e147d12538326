#!/usr/bin/env bash
# Interop test: a node of hmq's previous release beside a node of this one, as during a rolling
# upgrade. The previous release speaks cluster protocol version 1 only; this one offers 2 and
# falls back. All on loopback: node A (previous release) has its cluster port on 127.0.0.1, node B
# (this release) on 127.0.0.2, the same port number; MQTT and HTTP on free ports of 127.0.0.1.
#
# Checks:
#   1. the nodes link both ways (each: hmq_cluster_peers{state="linked"} 1), and B says it runs
#      its link to A at version 1
#   2. QoS 1 from a client on A to a subscriber on B, and from B to A: each message once, in order
#   3. a retained message stored on A reaches a new subscriber on B (and one on B reaches A)
#   4. a client id that connects to B is taken from A (takeover across versions: A's offline
#      session is discarded)
#
# Usage: broker/tests/interop/cluster_mixed.sh   (HMQ_BIN: this release's broker;
#        HMQ_PREVIOUS_BIN: the previous release's, default target/previous/hmq, built by
#        scripts/build-previous.sh). KEEP_INTEROP_WORK=1 keeps the logs after a failure.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

PREV_BIN=${HMQ_PREVIOUS_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/previous/hmq}
[[ -x $PREV_BIN ]] || die "previous release's broker $PREV_BIN not found (run scripts/build-previous.sh)"
[[ -x $HMQ_BIN ]] || die "broker binary $HMQ_BIN not found (run: cargo build --release --bin hmq)"
command -v mosquitto_pub >/dev/null || die "mosquitto_pub not installed (apt-get install mosquitto-clients)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hmq-mixed.XXXXXX")
CLUSTER_PORT=$(free_port)
declare -A PORT HTTP PID
PORT[a]=$(free_port)
PORT[b]=$(free_port)
HTTP[a]=$(free_port)
HTTP[b]=$(free_port)

mixed_cleanup() {
    local rc=$? n
    trap - EXIT
    kill_jobs
    for n in a b; do
        [[ -n ${PID[$n]:-} ]] || continue
        if ! alive "${PID[$n]}"; then
            echo "FAIL: node $n died during the test" >&2
            rc=1
            continue
        fi
        kill -TERM "${PID[$n]}" 2>/dev/null || true
    done
    for n in a b; do
        [[ -n ${PID[$n]:-} ]] || continue
        exit_or_kill "${PID[$n]}" "node $n" || rc=1
    done
    if ((rc != 0)); then
        for n in a b; do
            echo "---- last lines of node $n's log ----" >&2
            tail -n 30 "$WORK/$n.log" >&2 || true
        done
    fi
    if ((rc != 0)) && [[ -n ${KEEP_INTEROP_WORK:-} ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap mixed_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# start NODE BIN CLUSTER_HOST
start() {
    local n=$1 bin=$2 host=$3
    cat >"$WORK/$n.json" <<JSON
{"host": "127.0.0.1", "port": ${PORT[$n]}, "httpHost": "127.0.0.1", "httpPort": ${HTTP[$n]},
 "cluster": {"host": "$host", "port": $CLUSTER_PORT, "name": "node-$n", "secret": "mixed-test-secret",
             "peers": ["127.0.0.1:$CLUSTER_PORT", "127.0.0.2:$CLUSTER_PORT"], "discoveryInterval": 1}}
JSON
    # Started from a subshell: not a job of this shell, so kill_jobs leaves it alone.
    ("$bin" -c "$WORK/$n.json" >>"$WORK/$n.log" 2>&1 & echo $! >"$WORK/$n.pid")
    PID[$n]=$(cat "$WORK/$n.pid")
    wait_port "${PORT[$n]}" "${PID[$n]}" 20 || die "node $n ($bin) did not start"
    echo "node $n: $bin (pid ${PID[$n]}), MQTT 127.0.0.1:${PORT[$n]}, cluster $host:$CLUSTER_PORT"
}

# metric NODE NAME: the value of sample NAME (labels included) on NODE, or a failure.
metric() {
    python3 - "${HTTP[$1]}" "$2" <<'PY'
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
body = opener.open(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=3).read().decode()
for line in body.splitlines():
    if line.split(" ")[0] == sys.argv[2]:
        print(line.rsplit(" ", 1)[1])
        sys.exit(0)
sys.exit(1)
PY
}

metric_is() { [[ $(metric "$1" "$2" 2>/dev/null) == "$3" ]]; }

# wait_for SECONDS WHAT CMD...
wait_for() {
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    die "not within $limit s: $what"
}

# sub NODE NAME SECONDS ARGS...: mosquitto_sub in the background on NODE (output $WORK/NAME.out),
# after its SUBACK.
sub() {
    local n=$1 name=$2 limit=$3 i
    shift 3
    stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "${PORT[$n]}" -d -W "$limit" -F 'MSG|%q|%r|%t|%p' "$@" \
        >"$WORK/$name.out" 2>&1 &
    for ((i = 0; i < 100; i++)); do
        grep -q '^Subscribed (mid' "$WORK/$name.out" && return 0
        sleep 0.1
    done
    die "subscriber $name on node $n got no SUBACK"
}

got() { awk -F'|' -v t="$2" '$1 == "MSG" && $4 == t { print $5 }' "$WORK/$1.out"; }

pub() {
    local n=$1
    shift
    timeout 20 mosquitto_pub -h 127.0.0.1 -p "${PORT[$n]}" "$@" || die "mosquitto_pub on node $n failed"
}

# probe NODE SUB TOPIC: publishes on NODE until SUB has TOPIC (the route reached NODE).
probe() {
    local i
    for ((i = 0; i < 50; i++)); do
        pub "$1" -q 1 -t "$3" -m probe
        sleep 0.1
        [[ -n $(got "$2" "$3") ]] && return 0
    done
    die "subscriber $2 never got $3 published on node $1"
}

# sequence FROM_NODE TO_NODE NAME: 20 numbered QoS 1 messages from one node to a subscriber on
# the other, each once and in order.
sequence() {
    local from=$1 to=$2 name=$3 i
    sub "$to" "$name" 30 -q 1 -t "$name/#"
    probe "$from" "$name" "$name/probe"
    seq 1 20 | pub "$from" -q 1 -t "$name/x" -l
    for ((i = 0; i < 100; i++)); do
        (($(got "$name" "$name/x" | wc -l) >= 20)) && break
        sleep 0.1
    done
    sleep 0.5 # a duplicate would come now
    [[ $(got "$name" "$name/x") == "$(seq 1 20)" ]] ||
        die "node $from -> node $to: expected 1..20 once and in order, got: $(got "$name" "$name/x" | tr '\n' ' ')"
}

check_links() {
    wait_for 30 "both nodes linked to each other" \
        eval 'metric_is a "hmq_cluster_peers{state=\"linked\"}" 1 && metric_is b "hmq_cluster_peers{state=\"linked\"}" 1'
    grep -q 'cluster link up.*version=1' "$WORK/b.log" ||
        die "node b's log does not say its link to the previous release runs at version 1"
    echo "    linked both ways; node b's link to node a runs at version 1"
}

check_delivery() {
    sequence a b ab
    sequence b a ba
}

check_retained() {
    pub a -q 1 -r -t mixed/ret-a -m from-a
    pub b -q 1 -r -t mixed/ret-b -m from-b
    local i
    for ((i = 0; i < 50; i++)); do
        timeout 5 mosquitto_sub -h 127.0.0.1 -p "${PORT[b]}" -t mixed/ret-a -C 1 -W 2 -F '%r|%p' \
            >"$WORK/ret-b.out" 2>/dev/null || true
        timeout 5 mosquitto_sub -h 127.0.0.1 -p "${PORT[a]}" -t mixed/ret-b -C 1 -W 2 -F '%r|%p' \
            >"$WORK/ret-a.out" 2>/dev/null || true
        [[ $(cat "$WORK/ret-b.out") == "1|from-a" && $(cat "$WORK/ret-a.out") == "1|from-b" ]] && return 0
        sleep 0.2
    done
    die "retained messages not exchanged: on b '$(cat "$WORK/ret-b.out")', on a '$(cat "$WORK/ret-a.out")'"
}

check_takeover() {
    # An offline persistent session on A (the client subscribes and leaves)...
    timeout 10 mosquitto_sub -h 127.0.0.1 -p "${PORT[a]}" -c -i mixed-dev -q 1 -t mixed/dev -E ||
        die "persistent subscribe on node a failed"
    wait_for 10 "node a holds the offline session" metric_is a 'hmq_sessions{state="offline"}' 1
    # ...then the same client id connects to B.
    sub b taker 30 -c -i mixed-dev -q 1 -t mixed/dev
    wait_for 10 "node a let the client id go (no session left)" \
        eval 'metric_is a "hmq_sessions{state=\"online\"}" 0 && metric_is a "hmq_sessions{state=\"offline\"}" 0'
    metric_is b 'hmq_sessions{state="online"}' 1 || die "node b does not have the client online"
}

start a "$PREV_BIN" 127.0.0.1
start b "$HMQ_BIN" 127.0.0.2
check "1. a node of the previous release and one of this release link (version 1)" check_links
check "2. QoS 1 across the versions, both ways, once each and in order" check_delivery
check "3. retained messages exchanged across the versions" check_retained
check "4. a client id taken over across the versions" check_takeover
check_summary "cluster_mixed"
