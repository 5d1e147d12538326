#!/usr/bin/env bash
# Interop test: password files move both ways between hmq and Mosquitto 2.0.11.
#   1. `hmq passwd` writes a file; hmq (allowAnonymous false) accepts the right password and
#      refuses a wrong one, an unknown user and an anonymous client (mosquitto_pub).
#   2. A file written by `mosquitto_passwd` is accepted by hmq.
#   3. The file written by `hmq passwd` is accepted by a real Mosquitto broker.
# Every client runs under `timeout`; every wait is bounded; all traffic goes to 127.0.0.1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

for tool in mosquitto mosquitto_pub mosquitto_passwd; do
    command -v "$tool" >/dev/null || die "$tool not installed (apt-get install mosquitto mosquitto-clients)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hmq-interop.XXXXXX")
MOSQ_PID=""
cleanup_all() {
    [[ -z $MOSQ_PID ]] || kill -TERM "$MOSQ_PID" 2>/dev/null || true
    interop_cleanup
}

# pub PORT ARGS...: one QoS 1 message; succeeds only if the broker accepted the connection.
pub() {
    local port=$1
    shift
    timeout 10 mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t interop/passwd -m x "$@" 2>"$WORK/pub.err"
}

echo "s3cret" | "$HMQ_BIN" passwd --iterations 20000 "$WORK/hmq.passwd" alice
[[ $(stat -c %a "$WORK/hmq.passwd") == 600 ]] || die "hmq passwd did not create the file with mode 0600"
printf '{"passwordFile": "%s", "allowAnonymous": false}\n' "$WORK/hmq.passwd" >"$WORK/hmq.json"
BROKER_ARGS=(-c "$WORK/hmq.json")
trap cleanup_all EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
start_broker

hmq_accepts_hmq_passwd() {
    pub "$BROKER_PORT" -u alice -P s3cret
    ! pub "$BROKER_PORT" -u alice -P wrong
    grep -qi "bad user name or password" "$WORK/pub.err"
    ! pub "$BROKER_PORT" -u mallory -P s3cret
    ! pub "$BROKER_PORT"
    grep -qi "not authori[sz]ed" "$WORK/pub.err"
}
check "hmq passwd file: right password accepted, wrong/unknown/anonymous refused" hmq_accepts_hmq_passwd

hmq_accepts_mosquitto_passwd() {
    local port pid
    mosquitto_passwd -c -b "$WORK/mosq.passwd" carol "pa ss:wörd" >/dev/null
    printf '{"passwordFile": "%s", "allowAnonymous": false}\n' "$WORK/mosq.passwd" >"$WORK/hmq2.json"
    port=$(free_port)
    "$HMQ_BIN" --host 127.0.0.1 -p "$port" -c "$WORK/hmq2.json" --http-port "" >"$WORK/hmq2.log" 2>&1 &
    pid=$!
    wait_port "$port" "$pid" 10
    pub "$port" -u carol -P "pa ss:wörd"
    ! pub "$port" -u carol -P "pa ss:word"
    grep -q "weak password hashes" "$WORK/hmq2.log"
}
check "mosquitto_passwd file accepted by hmq (and its weak hash noticed)" hmq_accepts_mosquitto_passwd

mosquitto_accepts_hmq_passwd() {
    local port
    port=$(free_port)
    cat >"$WORK/mosquitto.conf" <<CONF
listener $port 127.0.0.1
user root
allow_anonymous false
password_file $WORK/hmq.passwd
persistence false
CONF
    mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    MOSQ_PID=$!
    wait_port "$port" "$MOSQ_PID" 10
    pub "$port" -u alice -P s3cret
    ! pub "$port" -u alice -P wrong
}
check "hmq passwd file accepted by Mosquitto" mosquitto_accepts_hmq_passwd

check_summary "passwd interop"
