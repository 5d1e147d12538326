#!/usr/bin/env bash
# Runs every interop test in this directory against the hmq release binary; each test gets its
# own fresh broker on 127.0.0.1 and a free port.
#
#   *.sh (except run.sh, lib.sh, netns_lib.sh)  run as is; the script starts and stops its own
#                                 broker(s) (lib.sh; netns_lib.sh for the network-namespace ones)
#   tools/                        helpers the tests run (not tests)
#   *.py                          run as `python3 TEST PORT` against a broker started here
#   *.mjs                         run as `node TEST PORT WSPORT` against a broker started here with
#                                 a WebSocket listener on WSPORT, path /ws (Node packages from
#                                 package.json in node_modules here: npm ci)
#   anything else (but *.md and package*.json)  an error: teach this script how to run it
#
# Usage: broker/tests/interop/run.sh [TEST...]   (default: every test in this directory)
# Environment: HMQ_BIN (default target/release/hmq; build it with cargo build --release --bin hmq),
#              KEEP_INTEROP_WORK=1 keeps a failing test's work directory (broker log, client output).
# Each test is killed after INTEROP_TEST_TIMEOUT seconds (default 300).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

limit=${INTEROP_TEST_TIMEOUT:-300}

if (($# > 0)); then
    tests=("$@")
else
    tests=()
    # Every file here is a test, except these and docs; an unknown kind fails below (no test is
    # skipped silently).
    for t in "$here"/*; do
        [[ -f $t ]] || continue
        case "$(basename "$t")" in
        run.sh | lib.sh | netns_lib.sh | *.md | package.json | package-lock.json) ;;
        *) tests+=("$t") ;;
        esac
    done
fi
((${#tests[@]} > 0)) || die "no interop tests found in $here"
[[ -x $HMQ_BIN ]] || die "broker binary $HMQ_BIN not found (run: cargo build --release --bin hmq)"
echo "broker binary: $HMQ_BIN"

failed=()
for t in "${tests[@]}"; do
    name=$(basename "$t")
    echo
    echo "---- interop: $name ----"
    start=$SECONDS
    rc=0
    case "$name" in
    *.sh) timeout --kill-after=10 "$limit" bash "$t" || rc=$? ;;
    *.py)
        # A subshell owns the broker: its EXIT trap (lib.sh) stops it whatever happens.
        (
            interop_setup
            timeout --kill-after=10 "$limit" python3 "$t" "$BROKER_PORT"
        ) || rc=$?
        ;;
    *.mjs)
        (
            interop_setup_ws
            timeout --kill-after=10 "$limit" node "$t" "$BROKER_PORT" "$BROKER_WS_PORT"
        ) || rc=$?
        ;;
    *)
        echo "FAIL: don't know how to run $name (add a case to run.sh)"
        rc=1
        ;;
    esac
    if ((rc == 124 || rc == 137)); then
        echo "FAIL: $name timed out after $limit s"
    fi
    if ((rc == 0)); then
        echo "---- interop: $name passed ($((SECONDS - start)) s) ----"
    else
        echo "---- interop: $name FAILED (status $rc, $((SECONDS - start)) s) ----"
        failed+=("$name")
    fi
done

echo
if ((${#failed[@]} > 0)); then
    echo "interop: ${#failed[@]} of ${#tests[@]} test(s) FAILED: ${failed[*]}"
    exit 1
fi
echo "interop: all ${#tests[@]} tests passed"
