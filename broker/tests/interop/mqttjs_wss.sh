#!/usr/bin/env bash
# Interop test: MQTT.js 5 (Node) over WSS (wsTLS) against the hmq release binary, with client
# certificates (tlsInfo.verify) and a PKI made by openssl at test time.
#
# Starts its own hmq on 127.0.0.1: MQTT on a free port, WSS on another (path /ws), then runs the
# checks of mqttjs_ws.mjs over wss://127.0.0.1:PORT/ws with a client certificate, plus one: a
# client without a certificate is refused.
#
# Usage: broker/tests/interop/mqttjs_wss.sh   (HMQ_BIN overrides the broker binary)
# Needs openssl, node and the Node packages here (npm ci). Every wait is bounded; all traffic goes
# to 127.0.0.1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

for tool in openssl node; do
    command -v "$tool" >/dev/null || die "$tool not installed"
done
[[ -d $INTEROP_DIR/node_modules/mqtt ]] ||
    die "Node packages missing: run npm ci in $INTEROP_DIR (scripts/test-all.sh does)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hmq-interop.XXXXXX")
trap interop_cleanup EXIT
PKI=$WORK/pki
mkdir -p "$PKI"

# ossl ARGS...: openssl, quiet unless it fails.
ossl() {
    openssl "$@" >"$WORK/openssl.out" 2>&1 || {
        cat "$WORK/openssl.out" >&2
        die "openssl $* failed"
    }
}

# cert NAME CN EXTENSIONS: $PKI/NAME.crt and NAME.key (EC P-256), signed by the CA.
cert() {
    ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
        -keyout "$PKI/$1.key" -out "$PKI/$1.csr"
    printf '%b\n' "$3" >"$PKI/$1.ext"
    ossl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 2 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt"
}

ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=hmq interop CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt"
cert server "hmq wss" 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'
cert client "mqttjs" 'extendedKeyUsage=clientAuth'

WSS_PORT=$(free_port)
cat >"$WORK/hmq.config" <<EOF
{
    "wsPort": $WSS_PORT,
    "wsPath": "/ws",
    "wsTLS": true,
    "tlsInfo": {
        "verify": true,
        "caFile": "$PKI/ca.crt",
        "certFile": "$PKI/server.crt",
        "keyFile": "$PKI/server.key"
    }
}
EOF
BROKER_ARGS=(-c "$WORK/hmq.config")
interop_setup
wait_port "$WSS_PORT" "$BROKER_PID" 10 || die "WSS listener not up on $WSS_PORT"

HMQ_WS_URL="wss://127.0.0.1:$WSS_PORT/ws" \
    HMQ_WS_CA="$PKI/ca.crt" HMQ_WS_CERT="$PKI/client.crt" HMQ_WS_KEY="$PKI/client.key" \
    timeout 200 node "$INTEROP_DIR/mqttjs_ws.mjs" "$BROKER_PORT" "$WSS_PORT"
