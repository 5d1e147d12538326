#!/usr/bin/env bash
# Interop test: a three-node hmq cluster on a real (virtual) network, with a partition and a node
# killed. Needs root: it makes network namespaces.
#
# Topology, all private to this run (names end with the script's PID): namespaces hmq-n1/2/3-PID,
# one per node, and hmq-br-PID holding a Linux bridge; a veth pair joins each node to the bridge;
# node i is 10.77.0.i/24 (that range exists only inside these namespaces). Each broker runs in
# its namespace with cluster port 1993, MQTT on 1883 and HTTP (metrics, /readyz) on 8080; the
# mosquitto clients run in the node's namespace and connect to 127.0.0.1:1883. No traffic leaves
# these namespaces.
#
# Checks:
#   1. the nodes link up (every node: hmq_cluster_peers{state="linked"} 2) and /readyz is 200
#   2. QoS 1 messages published on node 1 reach a subscriber on node 3 once each, in order
#   3. partition and heal: node 1's bridge port goes down. The first half of N numbered QoS 1
#      messages is published on node 1 right away (written into the broken TCP link), the second
#      half once node 1 reports 0 linked peers; node 1 acknowledges all of them, the persistent
#      subscriber on node 3 gets none and node 1 queues N. After the heal the subscriber gets all
#      N exactly once and in order, node 3 counts no duplicates, node 1 drops nothing, its queue
#      drains and it is linked to both peers again.
#   4. node 2 killed (SIGKILL): its peers see the link go, node 1 -> node 3 delivery goes on; node 2
#      restarted with the same config links again and its subscriber gets node 1's messages
#
# The kernel's TCP settings are left as they are: a silent partition is noticed by hmq's own
# heartbeat on the cluster links (a Ping every second, a link silent for 5 s is closed), not by
# TCP's retransmission timeout.
#
# Usage: broker/tests/interop/cluster_netns.sh   (as root; HMQ_BIN overrides the broker binary,
#        KEEP_INTEROP_WORK=1 keeps the work directory, with the broker logs, after a failure)
# Every client and wait is bounded in time; the EXIT trap kills every process in the namespaces
# and deletes them.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

CUT_MESSAGES=50
# shellcheck source-path=SCRIPTDIR source=netns_lib.sh
source "$(dirname "$0")/netns_lib.sh"

# ---------------------------------------------------------------------------------------------
# The checks.

check_link_up() {
    local t0
    t0=$(now_ms)
    wait_for 20 "all three nodes linked to 2 peers and ready" all_linked_ready 1 2 3
    echo "    linked and ready $(since "$t0") after the wait began"
}

check_cross_node() {
    sub_start 3 c2 30 -q 1 -t 'p/#'
    probe 1 c2 p/probe
    pub_numbered 1 p/x 1 20
    wait_count 10 c2 p/x 20
    sleep 0.5 # a duplicate would come now
    sub_stop c2
    expect_sequence c2 p/x 1 20
    expect_metric 3 hmq_cluster_duplicates_total 0
}

check_partition_heal() {
    local n=$CUT_MESSAGES half=$((CUT_MESSAGES / 2)) t0 q
    sub_start 3 sub3 60 -c -i sub3 -q 1 -t 'q/#'
    probe 1 sub3 q/probe
    expect_metric 1 'hmq_cluster_peers{state="linked"}' 2
    expect_metric 1 hmq_cluster_queued_messages 0

    t0=$(now_ms)
    # However this check ends, node 1 is connected again for the next one.
    trap 'ip -n "$BR_NS" link set n1 up || true; kill_jobs' EXIT
    ip -n "$BR_NS" link set n1 down || die "cannot set node 1's bridge port down"
    echo "    node 1 cut off (its bridge port is down)"
    # Written into the broken link; node 1 also tells both peers about the new client id.
    pub_numbered 1 q/cut 1 "$half"
    wait_for 20 "node 1 reports 0 linked peers after the cut" linked_is 1 0
    echo "    node 1 reports 0 linked peers $(since "$t0") after the cut"
    pub_numbered 1 q/cut $((half + 1)) "$n"
    sleep 1
    (($(count sub3 q/cut) == 0)) || die "subscriber on node 3 got $(count sub3 q/cut) messages during the cut"
    q=$(metric 1 hmq_cluster_queued_messages) || die "cannot read node 1's queue"
    ((q == n)) || die "node 1 queues $q messages during the cut, expected $n"
    echo "    during the cut: node 1 acknowledged all $n, queues $q, node 3 delivered none"

    t0=$(now_ms)
    ip -n "$BR_NS" link set n1 up || die "cannot set node 1's bridge port up"
    wait_count 30 sub3 q/cut "$n"
    echo "    all $n delivered on node 3 $(since "$t0") after the heal"
    wait_for 10 "node 1's queue drained" metric_is 1 hmq_cluster_queued_messages 0
    wait_for 10 "node 1 linked again to both peers" linked_is 1 2
    sleep 0.5 # a duplicate would come now
    sub_stop sub3
    expect_sequence sub3 q/cut 1 "$n"
    expect_metric 3 hmq_cluster_duplicates_total 0
    expect_metric 1 'hmq_cluster_dropped_total{' 0
    expect_metric 1 hmq_cluster_queued_messages 0
}

check_kill_restart() {
    local old t0
    old=$(node_pid 2)
    t0=$(now_ms)
    : >"$WORK/killed-2"
    kill -KILL "$old" || die "cannot kill node 2 (pid $old)"
    wait_for 5 "node 2 gone after SIGKILL" gone "$old"
    wait_for 10 "node 1 sees node 2's link go (1 linked peer)" linked_is 1 1
    wait_for 10 "node 3 sees node 2's link go (1 linked peer)" linked_is 3 1
    echo "    node 2 killed; nodes 1 and 3 saw it $(since "$t0") later"

    sub_start 3 k3 30 -q 1 -t 'k/#'
    probe 1 k3 k/probe
    pub_numbered 1 k/a 1 10
    wait_count 10 k3 k/a 10

    t0=$(now_ms)
    start_node 2
    rm -f "$WORK/killed-2"
    wait_for 20 "all three nodes linked and ready after node 2's restart" all_linked_ready 1 2 3
    echo "    node 2 restarted: linked and ready $(since "$t0") after its start"

    sub_start 2 k2 30 -q 1 -t 'k/#'
    probe 1 k2 k/probe
    pub_numbered 1 k/b 1 10
    wait_count 10 k2 k/b 10
    wait_count 10 k3 k/b 10
    sleep 0.5 # a duplicate would come now
    sub_stop k2
    sub_stop k3
    expect_sequence k3 k/a 1 10
    expect_sequence k2 k/b 1 10
    expect_sequence k3 k/b 1 10
    expect_metric 2 hmq_cluster_duplicates_total 0
    expect_metric 3 hmq_cluster_duplicates_total 0
}

# ---------------------------------------------------------------------------------------------

started=$(now_ms)
setup_network
echo "namespaces $BR_NS (bridge) and $(node_ns 1) $(node_ns 2) $(node_ns 3)"
for n in 1 2 3; do
    start_node "$n"
done

check "1. three nodes link up (2 peers linked each) and become ready" check_link_up
check "2. QoS 1 from node 1 to a subscriber on node 3, once each, in order" check_cross_node
check "3. partition of node 1: messages queued, delivered once and in order after the heal" check_partition_heal
check "4. node 2 killed and restarted: delivery goes on, node 2 links again and receives" check_kill_restart
echo "total $(since "$started")"
check_summary "cluster_netns"
