#!/usr/bin/env bash
# Round trip: the ConfigMap hmq-operator renders for an MqttCluster, fed to the real broker
# binary, starts a broker that serves the listeners, authentication and ACL the spec asked for.
#
#   1. write an MqttCluster (MQTT, MQTT/TLS, WebSocket, a password Secret, ACL rules, metrics)
#      on free loopback ports, and `hmq-operator render` it
#   2. take hmq.config and acl.conf from the rendered ConfigMap; rewrite the pod paths
#      (/etc/hmq/..., and /var/lib/hmq, the durable state's volume) to a temporary directory
#      holding what the Secrets would: a TLS certificate (openssl), a password file (hmq passwd)
#      and the cluster secret
#   3. run `hmq -c <dir>/hmq.config` and check with mosquitto_pub/mosquitto_sub and curl:
#      authentication, the ACL, TLS, the WebSocket upgrade, /readyz, /metrics, and a clean
#      exit on SIGTERM
#
# The rendered config makes the broker a cluster node (router = the headless Service's name,
# which does not resolve here: the node is then alone, and ready); its cluster listener is bound
# on 127.0.0.1.
#
# Usage: operator/tests/scripts/roundtrip.sh
# Environment: HMQ_BIN (default target/release/hmq), HMQ_OPERATOR_BIN (default
# target/debug/hmq-operator). All traffic stays on 127.0.0.1.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
HMQ_BIN=${HMQ_BIN:-$target/release/hmq}
HMQ_OPERATOR_BIN=${HMQ_OPERATOR_BIN:-$target/debug/hmq-operator}
[[ -x $HMQ_BIN ]] || { echo "FAIL: $HMQ_BIN not found (cargo build --release --bin hmq)" >&2; exit 1; }
[[ -x $HMQ_OPERATOR_BIN ]] || { echo "FAIL: $HMQ_OPERATOR_BIN not found (cargo build -p hmq-operator)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hmq-roundtrip.XXXXXX")
broker_pid=""
passed=0
cleanup() {
    if [[ -n $broker_pid ]] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -KILL "$broker_pid" 2>/dev/null || true
    fi
    if [[ ${KEEP_ROUNDTRIP_WORK:-} == 1 ]]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    [[ -f $work/broker.log ]] && { echo "--- broker log:" >&2; tail -n 40 "$work/broker.log" >&2; }
    exit 1
}
ok() {
    passed=$((passed + 1))
    echo "ok   $*"
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

mqtt=$(free_port) mqtts=$(free_port) ws=$(free_port) http=$(free_port)

# 1. The MqttCluster, rendered.
cat >"$work/cluster.yaml" <<EOF
apiVersion: hmq.io/v1alpha1
kind: MqttCluster
metadata: { name: roundtrip, namespace: default }
spec:
  replicas: 1
  config:
    wsPath: /mqtt
    shutdownTimeout: 5
  listeners:
    mqtt: { port: $mqtt }
    mqtts: { port: $mqtts }
    websocket: { port: $ws }
  tls: { secretName: roundtrip-tls }
  auth: { passwordSecretName: roundtrip-passwords, allowAnonymous: false }
  metrics: { port: $http }
  acl:
    rules:
      - { permission: allow, type: username, value: alice, access: publishSubscribe, topics: ["alice/#"] }
      - { permission: allow, type: username, value: bob, access: publish, topics: ["public/#"] }
      - { permission: allow, type: clientid, value: "*", access: subscribe, topics: ["public/#"] }
      - { permission: deny, type: clientid, value: "*", access: publishSubscribe, topics: ["#"] }
EOF
"$HMQ_OPERATOR_BIN" render -f "$work/cluster.yaml" >"$work/rendered.yaml" || fail "hmq-operator render"
ok "hmq-operator render"

# 2. The ConfigMap's files, with the pod's paths moved to the work directory and its wildcard
# listeners (the operator refuses any other address) moved to 127.0.0.1.
python3 - "$work" <<'EOF' || fail "extracting the ConfigMap"
import json, sys, yaml
work = sys.argv[1]
for document in yaml.safe_load_all(open(f"{work}/rendered.yaml")):
    if document and document["kind"] == "ConfigMap":
        for name, text in document["data"].items():
            text = text.replace("/etc/hmq", work).replace("/var/lib/hmq", f"{work}/data")
            if name == "hmq.config":
                config = json.loads(text)
                for section, key in [(config, "host"), (config, "tlsHost"),
                                     (config, "httpHost"), (config["cluster"], "host")]:
                    if section.get(key, "0.0.0.0") != "0.0.0.0":
                        sys.exit(f"the rendered {key} is {section[key]!r}, not the wildcard")
                    section[key] = "127.0.0.1"
                text = json.dumps(config, indent=2) + "\n"
            with open(f"{work}/{name}", "w") as f:
                f.write(text)
EOF
[[ -s $work/hmq.config && -s $work/acl.conf ]] || fail "the rendered ConfigMap has no hmq.config or acl.conf"

mkdir -p "$work/tls" "$work/auth" "$work/cluster"
(
    cd "$work/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=roundtrip CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout tls.key -out tls.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -set_serial 1 -days 2 -extfile server.ext -out tls.crt
) >"$work/openssl.log" 2>&1 || fail "openssl (see $work/openssl.log)"
echo alice-password | "$HMQ_BIN" passwd --iterations 1000 "$work/auth/passwordFile" alice >/dev/null ||
    fail "hmq passwd alice"
echo bob-password | "$HMQ_BIN" passwd --iterations 1000 "$work/auth/passwordFile" bob >/dev/null ||
    fail "hmq passwd bob"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/cluster/secret"

# 3. The broker, from the rendered file.
start() {
    "$HMQ_BIN" -c "$work/hmq.config" >"$work/broker.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        kill -0 "$broker_pid" 2>/dev/null || return 1
        curl -sf "http://127.0.0.1:$http/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
start || fail "the broker did not start with the rendered config"
ok "broker started from the rendered hmq.config; /readyz answers"
# spec.persistence is on by default: the broker keeps its state in the volume's directory.
grep -q '"dir": "'"$work"'/data"' "$work/hmq.config" || fail "hmq.config does not put the durable state in the volume"
[[ -d $work/data ]] && [[ -n $(ls -A "$work/data") ]] || fail "the broker wrote no durable state in $work/data"
ok "durable state in the volume's directory (spec.persistence)"

sub() { # sub PORT USER PASSWORD TOPIC [mosquitto options]: one message within 5 s, to stdout
    local port=$1 user=$2 password=$3 topic=$4
    shift 4
    mosquitto_sub -h 127.0.0.1 -p "$port" -u "$user" -P "$password" -t "$topic" -C 1 -W 5 "$@"
}
pub() { # pub PORT USER PASSWORD TOPIC MESSAGE [mosquitto options]
    local port=$1 user=$2 password=$3 topic=$4 message=$5
    shift 5
    mosquitto_pub -h 127.0.0.1 -p "$port" -u "$user" -P "$password" -t "$topic" -m "$message" -q 1 "$@"
}

# Authentication and the ACL, on the MQTT listener.
sub "$mqtt" alice alice-password 'alice/#' >"$work/alice.out" &
sub_pid=$!
sleep 0.5
pub "$mqtt" alice alice-password alice/inbox hello || fail "alice publishes to alice/inbox"
wait "$sub_pid" || fail "alice did not receive her message"
[[ $(cat "$work/alice.out") == hello ]] || fail "alice received $(cat "$work/alice.out")"
ok "alice publishes and subscribes on alice/# (ACL allow, password accepted)"

sub "$mqtt" alice alice-password 'alice/#' -W 2 >"$work/denied.out" 2>&1 &
sub_pid=$!
sleep 0.5
pub "$mqtt" bob bob-password alice/inbox intruder || true
if wait "$sub_pid" && grep -q intruder "$work/denied.out"; then
    fail "bob's message to alice/inbox was delivered despite the ACL"
fi
ok "bob cannot publish to alice/inbox (ACL deny)"

sub "$mqtt" alice alice-password 'public/#' >"$work/public.out" &
sub_pid=$!
sleep 0.5
pub "$mqtt" bob bob-password public/news extra || fail "bob publishes to public/news"
wait "$sub_pid" || fail "alice did not receive bob's public message"
ok "bob publishes to public/#, alice receives it"

if mosquitto_pub -h 127.0.0.1 -p "$mqtt" -t public/x -m anonymous 2>/dev/null; then
    fail "an anonymous client was accepted (allowAnonymous: false)"
fi
if mosquitto_pub -h 127.0.0.1 -p "$mqtt" -u alice -P wrong -t alice/x -m x 2>/dev/null; then
    fail "a wrong password was accepted"
fi
ok "anonymous clients and wrong passwords are refused"

# TLS, with the certificate from the "Secret".
sub "$mqtts" alice alice-password 'alice/#' -h localhost --cafile "$work/tls/ca.crt" >"$work/tls.out" &
sub_pid=$!
sleep 0.5
pub "$mqtts" alice alice-password alice/tls secure -h localhost --cafile "$work/tls/ca.crt" ||
    fail "publish over TLS"
wait "$sub_pid" || fail "no message over TLS"
[[ $(cat "$work/tls.out") == secure ]] || fail "TLS subscriber received $(cat "$work/tls.out")"
ok "MQTT over TLS on the mqtts listener"

# The WebSocket listener upgrades on the spec's path.
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --http1.1 \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Sec-WebSocket-Protocol: mqtt' \
    "http://127.0.0.1:$ws/mqtt" || true)
[[ $status == 101 ]] || fail "WebSocket upgrade on /mqtt answered $status"
ok "WebSocket listener upgrades on /mqtt"

curl -sf "http://127.0.0.1:$http/metrics" | grep -q '^hmq_' || fail "/metrics has no hmq_ metrics"
curl -sf "http://127.0.0.1:$http/healthz" >/dev/null || fail "/healthz"
ok "/metrics and /healthz on the metrics port"

kill -TERM "$broker_pid"
for _ in $(seq 100); do
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$broker_pid" 2>/dev/null; then fail "the broker did not stop within 10 s of SIGTERM"; fi
wait "$broker_pid" || fail "the broker exited with status $? after SIGTERM"
broker_pid=""
ok "SIGTERM: the broker drains and exits 0"
echo "roundtrip: $passed checks passed"
