# shellcheck shell=bash
# Helpers shared by the interop tests (sourced, not run): start the hmq release binary on a free
# loopback port, wait until it accepts connections, stop it (even on failure), report checks.
#
# Every wait here is bounded in time, and all traffic goes to 127.0.0.1.
#
# Environment:
#   HMQ_BIN   the broker binary (default: <target dir>/release/hmq, built by scripts/test-all.sh)

INTEROP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$INTEROP_DIR/../../.." && pwd)
HMQ_BIN=${HMQ_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/hmq}

BROKER_PID=""
BROKER_PORT=""
BROKER_LOG=""
BROKER_WS_PORT=""
BROKER_ARGS=() # more hmq arguments for start_broker (interop_setup_ws adds a WebSocket listener)
WORK=""
FAILED_CHECKS=()
PASSED_CHECKS=0

die() {
    echo "FAIL: $*" >&2
    exit 1
}

# Prints a free TCP port on 127.0.0.1 (asks the kernel through Python).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# True while process $1 exists and is not a zombie.
alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# Waits (at most $3 seconds, default 10) until 127.0.0.1:$1 accepts a TCP connection while the
# process $2 is alive.
wait_port() {
    local port=$1 pid=$2 limit=${3:-10} i
    for ((i = 0; i < limit * 10; i++)); do
        alive "$pid" || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Starts hmq on 127.0.0.1 and a free port; sets BROKER_PID, BROKER_PORT, BROKER_LOG. Retries with
# another port if the chosen one was taken in the meantime.
start_broker() {
    local attempt
    [[ -x $HMQ_BIN ]] || die "broker binary $HMQ_BIN not found (run: cargo build --release --bin hmq)"
    [[ -n $WORK ]] || WORK=$(mktemp -d "${TMPDIR:-/tmp}/hmq-interop.XXXXXX")
    BROKER_LOG="$WORK/hmq.log"
    for attempt in 1 2 3; do
        BROKER_PORT=$(free_port)
        "$HMQ_BIN" --host 127.0.0.1 -p "$BROKER_PORT" --http-port "" "${BROKER_ARGS[@]}" >>"$BROKER_LOG" 2>&1 &
        BROKER_PID=$!
        if wait_port "$BROKER_PORT" "$BROKER_PID" 10; then
            echo "hmq (pid $BROKER_PID) listening on 127.0.0.1:$BROKER_PORT, log $BROKER_LOG"
            return 0
        fi
        echo "hmq did not come up on port $BROKER_PORT (attempt $attempt); log:" >&2
        tail -n 20 "$BROKER_LOG" >&2 || true
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    done
    die "could not start hmq"
}

# exit_or_kill PID NAME: waits (at most 10 s) for PID, already sent SIGTERM, to exit; otherwise
# says so, kills it and returns non-zero.
exit_or_kill() {
    local pid=$1 name=$2 i
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    echo "FAIL: $name did not exit within 10 s of SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    return 1
}

# Stops the broker with SIGTERM (SIGKILL after 10 s). Returns non-zero, with a message, if the
# broker had already died or did not exit with status 0 (a clean shutdown exits 0).
stop_broker() {
    local pid=$BROKER_PID status=0
    [[ -n $pid ]] || return 0
    BROKER_PID=""
    if ! alive "$pid"; then
        wait "$pid" 2>/dev/null || status=$?
        echo "FAIL: hmq (pid $pid) died during the test with status $status" >&2
        return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! exit_or_kill "$pid" hmq; then
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    wait "$pid" 2>/dev/null || status=$?
    if ((status != 0)); then
        echo "FAIL: hmq exited with status $status after SIGTERM (expected 0)" >&2
        return 1
    fi
}

# kill_jobs [PID]: SIGKILL this shell's running background jobs, except PID.
kill_jobs() {
    local pid
    for pid in $(jobs -pr); do
        [[ $pid == "${1:-}" ]] || kill -KILL "$pid" 2>/dev/null || true
    done
}

# EXIT trap: stop background helpers and the broker; on failure show the broker's log.
interop_cleanup() {
    local rc=$?
    trap - EXIT
    kill_jobs "$BROKER_PID"
    stop_broker || rc=1
    if ((rc != 0)) && [[ -s $BROKER_LOG ]]; then
        echo "---- last lines of the hmq log ($BROKER_LOG) ----" >&2
        tail -n 40 "$BROKER_LOG" >&2
        echo "----" >&2
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if ((rc != 0)) && [[ -n ${KEEP_INTEROP_WORK:-} ]]; then
            echo "kept $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

# Starts a broker for the calling script and arranges for it to be stopped on any exit.
interop_setup() {
    trap interop_cleanup EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    start_broker
}

# interop_setup with a WebSocket listener (path /ws) on a second free port: sets BROKER_WS_PORT.
interop_setup_ws() {
    BROKER_WS_PORT=$(free_port)
    BROKER_ARGS+=(-ws "$BROKER_WS_PORT" -wsp /ws)
    interop_setup
}

# check NAME FUNCTION: runs FUNCTION in a subshell with `set -e`, prints "ok" or "FAIL", records
# failures and goes on with the next check (so one run reports every failing check).
check() {
    local name=$1 fn=$2 rc=0 start=$SECONDS
    set +e
    (
        set -e
        trap kill_jobs EXIT
        "$fn"
    )
    rc=$?
    set -e
    if ((rc == 0)); then
        echo "ok   - $name ($((SECONDS - start)) s)"
        PASSED_CHECKS=$((PASSED_CHECKS + 1))
    else
        echo "FAIL - $name"
        FAILED_CHECKS+=("$name")
    fi
}

# Prints the summary; returns non-zero if any check failed.
check_summary() {
    local what=$1
    if ((${#FAILED_CHECKS[@]} > 0)); then
        echo "$what: ${#FAILED_CHECKS[@]} check(s) FAILED, $PASSED_CHECKS passed:"
        printf '  - %s\n' "${FAILED_CHECKS[@]}"
        return 1
    fi
    echo "$what: all $PASSED_CHECKS checks passed"
}
