# shellcheck shell=bash
# Network-namespace helpers for the cluster interop tests (sourced after lib.sh, not run): a bridge
# namespace and one namespace per node (node i is 10.77.0.i/24, a range that exists only inside
# these namespaces, joined to the bridge by veth pairs), each broker in its own namespace (cluster
# port 1993, MQTT 1883, HTTP 8080), mosquitto clients in a node's namespace against 127.0.0.1,
# metrics and bounded waits. No traffic leaves these namespaces; the EXIT trap kills every process
# in them and deletes them.
#
# After sourcing: setup_network, then start_node N for each node in NODES (1 2 3).

NODES=(1 2 3)
BR_NS=hmq-br-$$
MADE_NS=() # namespaces this run created, deleted by the EXIT trap

command -v ip >/dev/null || die "ip not found (apt-get install iproute2)"
command -v mosquitto_pub >/dev/null || die "mosquitto_pub not installed (apt-get install mosquitto-clients)"
command -v mosquitto_sub >/dev/null || die "mosquitto_sub not installed (apt-get install mosquitto-clients)"
command -v stdbuf >/dev/null || die "stdbuf not found (coreutils)"
[[ -x $HMQ_BIN ]] || die "broker binary $HMQ_BIN not found (run: cargo build --release --bin hmq)"
((EUID == 0)) || die "this test makes network namespaces (ip netns add) and must run as root"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hmq-netns.XXXXXX")

node_ns() { echo "hmq-n$1-$$"; }

# in_node N CMD...: runs CMD in node N's namespace.
in_node() {
    local n=$1
    shift
    ip netns exec "$(node_ns "$n")" "$@"
}

# The PID of node N's broker (from its pid file), or nothing.
node_pid() { cat "$WORK/n$1.pid" 2>/dev/null || true; }

# EXIT trap: stop the brokers (SIGTERM, then SIGKILL), kill every other process left in the
# namespaces, delete the namespaces; on failure show the end of each broker's log.
netns_cleanup() {
    local rc=$? ns n pid i left dead_ok
    trap - EXIT
    kill_jobs
    for n in "${NODES[@]}"; do
        # A check that kills a node on purpose says so with this file until it is back.
        dead_ok=""
        [[ -e $WORK/killed-$n ]] && dead_ok=$n
        pid=$(node_pid "$n")
        [[ -n $pid ]] || continue
        if ! alive "$pid"; then
            if [[ $n != "$dead_ok" ]]; then
                echo "FAIL: node $n (pid $pid) died during the test" >&2
                rc=1
            fi
            continue
        fi
        kill -TERM "$pid" 2>/dev/null || true
    done
    for n in "${NODES[@]}"; do
        pid=$(node_pid "$n")
        [[ -n $pid ]] || continue
        exit_or_kill "$pid" "node $n" || rc=1
    done
    for ns in "${MADE_NS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    for ((i = 0; i < 50; i++)); do
        left=""
        for ns in "${MADE_NS[@]}"; do
            left+=$(ip netns pids "$ns" 2>/dev/null || true)
        done
        [[ -n $left ]] || break
        sleep 0.1
    done
    for ns in "${MADE_NS[@]}"; do
        if ! ip netns delete "$ns"; then
            echo "FAIL: could not delete network namespace $ns" >&2
            rc=1
        fi
    done
    if ((rc != 0)); then
        for n in "${NODES[@]}"; do
            [[ -s $WORK/n$n.log ]] || continue
            echo "---- last lines of node $n's log ----" >&2
            tail -n 30 "$WORK/n$n.log" >&2
            echo "----" >&2
        done
    fi
    if ((rc != 0)) && [[ -n ${KEEP_INTEROP_WORK:-} ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap netns_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# make_ns NAME: a new network namespace with lo up; a failure ends the test.
make_ns() {
    ip netns add "$1" ||
        die "ip netns add $1 failed: this test needs root with CAP_SYS_ADMIN and network namespace support"
    MADE_NS+=("$1")
    ip -n "$1" link set lo up || die "cannot set lo up in namespace $1"
}

# ---------------------------------------------------------------------------------------------
# The network.

setup_network() {
    local n ns
    make_ns "$BR_NS"
    ip -n "$BR_NS" link add br0 type bridge || die "cannot create a Linux bridge in $BR_NS"
    ip -n "$BR_NS" link set br0 up
    for n in "${NODES[@]}"; do
        ns=$(node_ns "$n")
        make_ns "$ns"
        # Port nN in the bridge namespace, eth0 in the node's.
        ip -n "$BR_NS" link add "n$n" type veth peer name eth0 netns "$ns" ||
            die "cannot create the veth pair for node $n"
        ip -n "$BR_NS" link set "n$n" master br0
        ip -n "$BR_NS" link set "n$n" up
        ip -n "$ns" addr add "10.77.0.$n/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
}

# node_config N: node N's hmq.config; NODE_EXTRA_CONFIG (e.g. ', "persistence": {...}') is added to
# its top-level object.
node_config() {
    cat <<EOF
{"host": "0.0.0.0", "port": 1883, "httpHost": "0.0.0.0", "httpPort": 8080${NODE_EXTRA_CONFIG:-},
 "cluster": {"host": "10.77.0.$1", "port": 1993, "name": "node-$1", "secret": "netns-test-secret",
             "peers": ["10.77.0.1:1993", "10.77.0.2:1993", "10.77.0.3:1993"], "discoveryInterval": 1}}
EOF
}

# start_node N: starts node N's broker in its namespace (log $WORK/nN.log, pid $WORK/nN.pid). It
# is nobody's job (started from a subshell), so a check's EXIT trap does not kill a restarted one.
start_node() {
    local n=$1
    node_config "$n" >"$WORK/n$n.json"
    (
        # ip netns exec execs the broker: $! is hmq itself.
        ip netns exec "$(node_ns "$n")" "$HMQ_BIN" -c "$WORK/n$n.json" >>"$WORK/n$n.log" 2>&1 &
        echo $! >"$WORK/n$n.pid"
    )
    echo "node $n: hmq pid $(node_pid "$n") in $(node_ns "$n") (10.77.0.$n)"
}

# ---------------------------------------------------------------------------------------------
# Metrics and waits.

# http_get N PATH: prints the body of http://127.0.0.1:8080PATH in node N's namespace; fails
# unless the answer is 200.
http_get() {
    timeout 5 ip netns exec "$(node_ns "$1")" python3 -c '
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open("http://127.0.0.1:8080" + sys.argv[1], timeout=3) as r:
        sys.stdout.write(r.read().decode())
except Exception as e:
    print(e, file=sys.stderr)
    sys.exit(1)
' "$2" 2>/dev/null
}

# metric N NAME: the value of the sample NAME (with its labels, e.g. 'x{a="b"}') on node N;
# fails if it cannot be read. NAME without labels and with a trailing { sums the family.
metric() {
    local body
    body=$(http_get "$1" /metrics) || return 1
    if [[ $2 == *'{' ]]; then
        awk -v p="$2" 'index($1, p) == 1 { s += $2; n++ } END { if (!n) exit 1; print s }' <<<"$body"
    else
        awk -v k="$2" '$1 == k { print $2; f = 1 } END { exit !f }' <<<"$body"
    fi
}

linked() { metric "$1" 'hmq_cluster_peers{state="linked"}'; }
linked_is() { metric_is "$1" 'hmq_cluster_peers{state="linked"}' "$2"; }
gone() { ! alive "$1"; }

# metric_is N NAME VALUE: true if NAME on node N is VALUE now.
metric_is() {
    local v
    v=$(metric "$1" "$2") || return 1
    [[ $v == "$3" ]]
}

# expect_metric N NAME VALUE: fails the check unless NAME on node N is VALUE.
expect_metric() {
    local v
    v=$(metric "$1" "$2") || die "node $1: cannot read $2 from /metrics"
    [[ $v == "$3" ]] || die "node $1: $2 is $v, expected $3"
}

# wait_for SECONDS WHAT CMD...: runs CMD every 0.2 s until it succeeds, for SECONDS (and at most
# SECONDS * 5 times); otherwise shows the nodes' state and fails the check with WHAT.
wait_for() {
    local limit=$1 what=$2 i end
    shift 2
    end=$(($(now_ms) + limit * 1000))
    for ((i = 0; i < limit * 5; i++)); do
        "$@" && return 0
        (($(now_ms) < end)) || break
        sleep 0.2
    done
    show_nodes
    die "not within $limit s: $what"
}

# Milliseconds since the epoch (EPOCHREALTIME without its locale's decimal separator).
now_ms() { echo $((${EPOCHREALTIME//[!0-9]/} / 1000)); }
# since T0: the time since T0 (now_ms) in seconds, e.g. "1.234 s".
since() {
    local d=$(($(now_ms) - $1))
    printf '%d.%03d s' $((d / 1000)) $((d % 1000))
}

# ---------------------------------------------------------------------------------------------
# Clients. A subscriber prints every message as MSG|qos|topic|payload.

declare -A SUB_PID=()

# sub_start N NAME SECONDS ARGS...: mosquitto_sub on node N in the background, output in
# $WORK/NAME.out, exiting after SECONDS (-W) at the latest; waits for its SUBACK.
sub_start() {
    local n=$1 name=$2 limit=$3 i
    shift 3
    : >"$WORK/$name.out"
    # ip netns exec and stdbuf exec the client: $! is mosquitto_sub itself.
    ip netns exec "$(node_ns "$n")" stdbuf -oL mosquitto_sub -h 127.0.0.1 -p 1883 -d -W "$limit" \
        -F 'MSG|%q|%t|%p' "$@" >"$WORK/$name.out" 2>&1 &
    SUB_PID[$name]=$!
    for ((i = 0; i < 100; i++)); do
        grep -q '^Subscribed (mid' "$WORK/$name.out" && return 0
        alive "${SUB_PID[$name]}" || break
        sleep 0.1
    done
    sed 's/^/    | /' "$WORK/$name.out" >&2
    die "subscriber $name on node $n ($*) got no SUBACK within 10 s"
}

# sub_stop NAME: stops the subscriber (SIGTERM: it disconnects cleanly).
sub_stop() {
    local pid=${SUB_PID[$1]} i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# got NAME TOPIC: the payloads subscriber NAME received on TOPIC, in order, as qos|payload.
got() {
    awk -F'|' -v t="$2" '$1 == "MSG" && $3 == t { print $2 "|" $4 }' "$WORK/$1.out"
}

# count NAME TOPIC: how many messages on TOPIC subscriber NAME received.
count() { got "$1" "$2" | wc -l; }

# pub N ARGS...: mosquitto_pub on node N, bounded; fails the check on error.
pub() {
    local n=$1
    shift
    timeout 20 ip netns exec "$(node_ns "$n")" mosquitto_pub -h 127.0.0.1 -p 1883 "$@" ||
        die "mosquitto_pub on node $n ($*) exited with status $?"
}

# pub_numbered N TOPIC FROM TO: publishes the numbers FROM..TO on node N as QoS 1 messages, in
# order on one connection, and checks that node N acknowledged each (PUBACK).
pub_numbered() {
    local n=$1 topic=$2 from=$3 to=$4 out acks
    out=$(seq "$from" "$to" | pub "$n" -d -q 1 -t "$topic" -l)
    acks=$(grep -c 'received PUBACK' <<<"$out" || true)
    if ((acks != to - from + 1)); then
        printf '%s\n' "$out" | sed 's/^/    | /' >&2
        die "node $n acknowledged $acks of the $((to - from + 1)) messages on $topic"
    fi
}

# probe N SUB TOPIC: publishes TOPIC on node N until subscriber SUB receives it: the
# subscriber's route has reached node N.
probe() {
    local n=$1 sub=$2 topic=$3 i j
    for ((i = 0; i < 40; i++)); do
        pub "$n" -q 1 -t "$topic" -m probe
        for ((j = 0; j < 5; j++)); do
            (($(count "$sub" "$topic") > 0)) && return 0
            sleep 0.05
        done
    done
    die "subscriber $sub never received $topic published on node $n (route not propagated in 10 s)"
}

# expect_sequence SUB TOPIC FROM TO: subscriber SUB received exactly FROM..TO on TOPIC, each once,
# in order, all at QoS 1.
expect_sequence() {
    local sub=$1 topic=$2 want have
    want=$(seq "$3" "$4" | sed 's/^/1|/')
    have=$(got "$sub" "$topic")
    if [[ $have != "$want" ]]; then
        echo "subscriber $sub on $topic: expected qos|payload $3..$4 in order, got:" >&2
        diff <(echo "$want") <(echo "$have") | head -n 40 | sed 's/^/    /' >&2 || true
        die "subscriber $sub did not get $3..$4 on $topic exactly once and in order"
    fi
}

# wait_count SECONDS SUB TOPIC N: waits until subscriber SUB has N messages on TOPIC.
wait_count() {
    local limit=$1 sub=$2 topic=$3 want=$4 i end
    end=$(($(now_ms) + limit * 1000))
    for ((i = 0; i < limit * 10; i++)); do
        (($(count "$sub" "$topic") >= want)) && return 0
        if ! alive "${SUB_PID[$sub]}" || (($(now_ms) >= end)); then
            break
        fi
        sleep 0.1
    done
    show_nodes
    echo "subscriber $sub got on $topic (qos|payload): $(got "$sub" "$topic" | tr '\n' ' ')" >&2
    die "subscriber $sub has $(count "$sub" "$topic") of $want messages on $topic after $limit s"
}

all_linked_ready() {
    local n
    for n in "$@"; do
        metric_is "$n" 'hmq_cluster_peers{state="linked"}' 2 || return 1
        http_get "$n" /readyz >/dev/null || return 1
    done
}

show_nodes() {
    local n
    for n in "${NODES[@]}"; do
        echo "    node $n: linked $(linked "$n" || echo '?'), ready: $(http_get "$n" /readyz >/dev/null && echo yes || echo no)" >&2
    done
}

