#!/usr/bin/env bash
# Interop test: Debian's mosquitto_pub / mosquitto_sub (2.0.11) and openssl s_client over TLS
# against the hmq release binary, with a PKI made by openssl at test time.
#
# Two brokers on 127.0.0.1, one after the other, each on two free ports (TCP and TLS):
#   A  tlsPort, no client certificates; server key RSA in PKCS#1 ("RSA PRIVATE KEY")
#   B  tlsPort + tlsInfo.verify; server key EC P-256 in SEC1 ("EC PRIVATE KEY"), certificate and
#      key mounted the way Kubernetes mounts a Secret (tls.crt -> ..data/tls.crt, ..data -> dir)
# Checks: QoS 0/1/2 round trips over TLS, TLS and TCP clients together, TLS 1.2 and 1.3 (and not
# 1.1), host name and IP address verification; with verify: client certificates (EC PKCS#8 key)
# accepted, no certificate and a certificate from another CA refused (with the reason in the
# broker's log); certificate rotation by symlink swap without dropping a connected subscriber,
# a broken replacement keeping the old certificate.
#
# Usage: broker/tests/interop/mosquitto_tls.sh   (HMQ_BIN overrides the broker binary)
# Every client runs under `timeout`; every wait is bounded; all traffic goes to 127.0.0.1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

for tool in openssl mosquitto_pub mosquitto_sub; do
    command -v "$tool" >/dev/null ||
        die "$tool not installed (apt-get install openssl mosquitto-clients)"
done
[[ -x $HMQ_BIN ]] || die "broker binary $HMQ_BIN not found (run: cargo build --release --bin hmq)"

trap interop_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hmq-interop.XXXXXX")
PKI=$WORK/pki
mkdir -p "$PKI"
TLS_PORT=""

# --- certificates ----------------------------------------------------------------------------

SERIAL=100

# ossl ARGS...: openssl, quiet unless it fails.
ossl() {
    openssl "$@" >"$WORK/openssl.out" 2>&1 || {
        cat "$WORK/openssl.out" >&2
        die "openssl $* failed"
    }
}

# make_ca NAME CN: $PKI/NAME.crt and NAME.key, a self-signed CA.
make_ca() {
    ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$PKI/$1.key" -out "$PKI/$1.crt"
}

# make_key FILE TYPE: a private key in the format TYPE, checked by its PEM label.
make_key() {
    local file=$1 type=$2 label
    case $type in
    rsa-pkcs1) ossl genrsa -traditional -out "$file" 2048 && label="RSA PRIVATE KEY" ;;
    rsa-pkcs8) ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$file" && label="PRIVATE KEY" ;;
    ec-sec1) ossl ecparam -name prime256v1 -genkey -noout -out "$file" && label="EC PRIVATE KEY" ;;
    ec-pkcs8) ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$file" && label="PRIVATE KEY" ;;
    *) die "unknown key type $type" ;;
    esac
    [[ $(head -n 1 "$file") == "-----BEGIN $label-----" ]] ||
        die "$file: expected a $label, got $(head -n 1 "$file")"
}

# make_cert NAME CA KEYTYPE CN EXTENSIONS: $PKI/NAME.crt and NAME.key signed by CA.
make_cert() {
    local name=$1 ca=$2 keytype=$3 cn=$4 ext=$5
    SERIAL=$((SERIAL + 1))
    make_key "$PKI/$name.key" "$keytype"
    ossl req -new -key "$PKI/$name.key" -subj "/CN=$cn" -out "$PKI/$name.csr"
    printf '%b\n' "$ext" >"$PKI/$name.ext"
    ossl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
        -set_serial "$SERIAL" -days 2 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt"
}

SERVER_EXT='subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE'
CLIENT_EXT='subjectAltName=email:device-1@example.com\nextendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE'

make_ca ca "hmq interop CA"
make_ca other-ca "some other CA"
make_cert server-rsa ca rsa-pkcs1 "hmq interop server A" "$SERVER_EXT"
make_cert server-ec ca ec-sec1 "hmq interop server B" "$SERVER_EXT"
make_cert server-new ca rsa-pkcs8 "hmq interop server B rotated" "$SERVER_EXT"
make_cert client ca ec-pkcs8 "device-1" "$CLIENT_EXT"
make_cert intruder other-ca ec-pkcs8 "intruder" "$CLIENT_EXT"

# secret_swap DIR CERT KEY: a Kubernetes-style Secret volume in DIR: the files go into a new
# directory, then the ..data symlink is replaced in one rename.
SECRET_VERSION=0
secret_swap() {
    local dir=$1 cert=$2 key=$3 version
    SECRET_VERSION=$((SECRET_VERSION + 1))
    version="..v$SECRET_VERSION"
    mkdir -p "$dir/$version"
    cp "$cert" "$dir/$version/tls.crt"
    cp "$key" "$dir/$version/tls.key"
    ln -sfn "$version" "$dir/..data_tmp"
    mv -T "$dir/..data_tmp" "$dir/..data"
    [[ -L $dir/tls.crt ]] || ln -s ..data/tls.crt "$dir/tls.crt"
    [[ -L $dir/tls.key ]] || ln -s ..data/tls.key "$dir/tls.key"
}

# --- broker ----------------------------------------------------------------------------------

# start_tls_broker NAME VERIFY CERT KEY: hmq with a TCP and a TLS listener on 127.0.0.1 and free
# ports, from a config file; sets BROKER_PID, BROKER_PORT, TLS_PORT, BROKER_LOG.
start_tls_broker() {
    local name=$1 verify=$2 cert=$3 key=$4 attempt config
    config="$WORK/$name.config"
    BROKER_LOG="$WORK/$name.log"
    for attempt in 1 2 3; do
        BROKER_PORT=$(free_port)
        TLS_PORT=$(free_port)
        [[ $TLS_PORT != "$BROKER_PORT" ]] || continue
        cat >"$config" <<EOF
{
    "host": "127.0.0.1",
    "port": "$BROKER_PORT",
    "tlsHost": "127.0.0.1",
    "tlsPort": "$TLS_PORT",
    "tlsInfo": {
        "verify": $verify,
        "caFile": "$PKI/ca.crt",
        "certFile": "$cert",
        "keyFile": "$key"
    }
}
EOF
        "$HMQ_BIN" -c "$config" --http-port "" >>"$BROKER_LOG" 2>&1 &
        BROKER_PID=$!
        # Both listeners are bound before the broker accepts on either: waiting for the TCP
        # port does not leave a failed TLS handshake in the log.
        if wait_port "$BROKER_PORT" "$BROKER_PID" 10; then
            echo "hmq $name (pid $BROKER_PID): tcp 127.0.0.1:$BROKER_PORT, tls 127.0.0.1:$TLS_PORT, verify $verify, log $BROKER_LOG"
            return 0
        fi
        echo "hmq $name did not come up (attempt $attempt); log:" >&2
        tail -n 20 "$BROKER_LOG" >&2 || true
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    done
    die "could not start hmq $name"
}

# --- clients ---------------------------------------------------------------------------------

FORMAT='MSG|%r|%q|%t|%p'
declare -A SUB_PID=()
CA=(--cafile "$PKI/ca.crt")
CERT=(--cert "$PKI/client.crt" --key "$PKI/client.key")

# tls_pub ARGS...: mosquitto_pub to the TLS port as "localhost", bounded; fails the check on error.
tls_pub() {
    timeout 15 mosquitto_pub -h localhost -p "$TLS_PORT" "${CA[@]}" "$@" ||
        die "mosquitto_pub (TLS) $* exited with status $?"
}

# tls_pub_refused ARGS...: mosquitto_pub to the TLS port must fail (not time out).
tls_pub_refused() {
    local rc=0
    timeout 15 mosquitto_pub -h localhost -p "$TLS_PORT" "$@" >"$WORK/refused.out" 2>&1 || rc=$?
    sed 's/^/    mosquitto_pub: /' "$WORK/refused.out"
    ((rc != 0)) || die "mosquitto_pub $* succeeded; it should have been refused"
    ((rc != 124)) || die "mosquitto_pub $* hung until the timeout instead of failing"
}

tcp_pub() {
    timeout 15 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" "$@" ||
        die "mosquitto_pub (TCP) $* exited with status $?"
}

# sub_start NAME HOST PORT ARGS...: mosquitto_sub in the background (-d output in
# $WORK/NAME.out); returns once the broker acknowledged the subscription. Give it -C n.
sub_start() {
    local name=$1 host=$2 port=$3 i
    shift 3
    timeout 30 stdbuf -oL mosquitto_sub -h "$host" -p "$port" -d -W 25 -F "$FORMAT" "$@" \
        >"$WORK/$name.out" 2>&1 &
    SUB_PID[$name]=$!
    for ((i = 0; i < 100; i++)); do
        grep -qs '^Subscribed (mid' "$WORK/$name.out" && return 0
        alive "${SUB_PID[$name]}" || break
        sleep 0.1
    done
    cat "$WORK/$name.out" >&2
    die "subscriber $name ($*) did not get its SUBACK within 10 s"
}

# sub_expect NAME LINE...: waits for subscriber NAME to exit; compares its messages
# (retain|qos|topic|payload per line, in order) with the expected lines.
sub_expect() {
    local name=$1 rc=0 got want
    shift
    wait "${SUB_PID[$name]}" || rc=$?
    got=$(grep '^MSG|' "$WORK/$name.out" | cut -c5- || true)
    want=$(printf '%s\n' "$@")
    if [[ $got != "$want" || $rc != 0 ]]; then
        echo "subscriber $name: exit status $rc (27 = timed out waiting for messages)" >&2
        printf 'expected:\n%s\nreceived:\n%s\nmosquitto_sub -d output:\n' "$want" "$got" >&2
        sed 's/^/    | /' "$WORK/$name.out" >&2
        die "subscriber $name did not receive exactly the expected messages"
    fi
}

# s_client ARGS...: one openssl TLS handshake with the TLS port (as "localhost"), bounded; prints
# its output, returns its status.
s_client() {
    timeout 10 openssl s_client -connect "127.0.0.1:$TLS_PORT" -servername localhost \
        -CAfile "$PKI/ca.crt" "$@" </dev/null 2>&1
}

# served_serial: the serial number of the certificate the broker presents (empty if none), with
# the client certificate (broker B requires one).
served_serial() {
    { s_client -cert "$PKI/client.crt" -key "$PKI/client.key" || true; } |
        { openssl x509 -noout -serial 2>/dev/null || true; } | sed 's/^serial=//'
}

# log_has TEXT: the current broker's log mentions TEXT within 5 s.
log_has() {
    local i
    for ((i = 0; i < 50; i++)); do
        grep -qF -- "$1" "$BROKER_LOG" && return 0
        sleep 0.1
    done
    die "the broker log does not say: $1"
}

# --- checks, broker A: TLS without client certificates ---------------------------------------

a_round_trip() {
    sub_start a-rt localhost "$TLS_PORT" "${CA[@]}" -q 2 -t it/tls/rt -C 3
    tls_pub -q 0 -t it/tls/rt -m zero
    tls_pub -q 1 -t it/tls/rt -m one
    tls_pub -q 2 -t it/tls/rt -m two
    sub_expect a-rt "0|0|it/tls/rt|zero" "0|1|it/tls/rt|one" "0|2|it/tls/rt|two"
}

a_tls_and_tcp() {
    sub_start a-tls localhost "$TLS_PORT" "${CA[@]}" -q 1 -t it/mix -C 1
    sub_start a-tcp 127.0.0.1 "$BROKER_PORT" -q 1 -t it/mix -C 1
    tcp_pub -q 1 -t it/mix -m tcp
    sub_expect a-tls "0|1|it/mix|tcp"
    sub_expect a-tcp "0|1|it/mix|tcp"
    sub_start a-tcp2 127.0.0.1 "$BROKER_PORT" -q 1 -t it/mix2 -C 1
    tls_pub -q 1 -t it/mix2 -m tls
    sub_expect a-tcp2 "0|1|it/mix2|tls"
}

a_versions() {
    local out
    out=$(s_client -tls1_2) || die "TLS 1.2 handshake failed: $out"
    grep -q 'Protocol  *: TLSv1.2' <<<"$out" || die "TLS 1.2 not negotiated: $out"
    out=$(s_client -tls1_3) || die "TLS 1.3 handshake failed: $out"
    grep -q 'Protocol  *: TLSv1.3\|New, TLSv1.3' <<<"$out" || die "TLS 1.3 not negotiated: $out"
    # SECLEVEL=0 lets OpenSSL 3 really offer TLS 1.1; hmq must refuse it.
    if out=$(s_client -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'); then
        die "a TLS 1.1 handshake succeeded: $out"
    fi
    log_has "the client does not offer TLS 1.2 or 1.3"
    sub_start a-ver localhost "$TLS_PORT" "${CA[@]}" -q 1 -t it/ver -C 2
    tls_pub --tls-version tlsv1.2 -q 1 -t it/ver -m v12
    tls_pub --tls-version tlsv1.3 -q 1 -t it/ver -m v13
    sub_expect a-ver "0|1|it/ver|v12" "0|1|it/ver|v13"
}

a_names() {
    # The certificate names localhost (DNS) and 127.0.0.1 (IP): both verify.
    sub_start a-ip 127.0.0.1 "$TLS_PORT" "${CA[@]}" -q 1 -t it/ip -C 1
    timeout 15 mosquitto_pub -h 127.0.0.1 -p "$TLS_PORT" "${CA[@]}" -q 1 -t it/ip -m ip ||
        die "mosquitto_pub to 127.0.0.1 (IP SAN) failed"
    sub_expect a-ip "0|1|it/ip|ip"
    # mosquitto sends the IP address as SNI, which TLS does not allow and rustls ignores: not a
    # problem of the broker's operator, so no warning per connection in the broker's log.
    if grep -q "SNI" "$BROKER_LOG"; then
        die "the broker logs each IP-address SNI: $(grep -m1 SNI "$BROKER_LOG")"
    fi
    # A client that trusts another CA refuses the broker.
    tls_pub_refused --cafile "$PKI/other-ca.crt" -t it/x -m x
}

# --- checks, broker B: client certificates required ------------------------------------------

b_mtls_round_trip() {
    sub_start b-rt localhost "$TLS_PORT" "${CA[@]}" "${CERT[@]}" -q 2 -t it/mtls/rt -C 3
    tls_pub "${CERT[@]}" -q 0 -t it/mtls/rt -m zero
    tls_pub "${CERT[@]}" --tls-version tlsv1.2 -q 1 -t it/mtls/rt -m one
    tls_pub "${CERT[@]}" --tls-version tlsv1.3 -q 2 -t it/mtls/rt -m two
    sub_expect b-rt "0|0|it/mtls/rt|zero" "0|1|it/mtls/rt|one" "0|2|it/mtls/rt|two"
}

b_refusals() {
    # The watcher's only message must be the marker sent after the refused publishes.
    sub_start b-watch localhost "$TLS_PORT" "${CA[@]}" "${CERT[@]}" -q 1 -t it/mtls/deny -C 1
    tls_pub_refused "${CA[@]}" -q 1 -t it/mtls/deny -m no-cert
    log_has "client certificate required"
    tls_pub_refused "${CA[@]}" --cert "$PKI/intruder.crt" --key "$PKI/intruder.key" \
        -q 1 -t it/mtls/deny -m intruder
    log_has "client certificate rejected: unknown CA"
    # The marker, from a client with a good certificate.
    tls_pub "${CERT[@]}" -q 1 -t it/mtls/deny -m marker
    sub_expect b-watch "0|1|it/mtls/deny|marker"
}

b_rotation() {
    local old new i
    old=$(served_serial)
    [[ -n $old ]] || die "no certificate served"
    # A subscriber connected before the rotation.
    sub_start b-before localhost "$TLS_PORT" "${CA[@]}" "${CERT[@]}" -q 1 -t it/rot -C 2
    tls_pub "${CERT[@]}" -q 1 -t it/rot -m before

    # A broken replacement (certificate and key that do not belong together): the old
    # certificate stays in service, and the log says why.
    secret_swap "$PKI/secret" "$PKI/server-new.crt" "$PKI/server-ec.key"
    log_has "still serving the previous certificate"
    [[ $(served_serial) == "$old" ]] || die "a broken replacement was put in service"

    # The real rotation.
    secret_swap "$PKI/secret" "$PKI/server-new.crt" "$PKI/server-new.key"
    new=$(openssl x509 -in "$PKI/server-new.crt" -noout -serial | sed 's/^serial=//')
    for ((i = 0; i < 100; i++)); do
        [[ $(served_serial) == "$new" ]] && break
        sleep 0.1
    done
    [[ $(served_serial) == "$new" ]] ||
        die "the rotated certificate (serial $new) was not served within 10 s (still $old?)"
    log_has "TLS certificate reloaded"
    # New connections use the new certificate; the old subscriber is still connected.
    tls_pub "${CERT[@]}" -q 1 -t it/rot -m after
    sub_expect b-before "0|1|it/rot|before" "0|1|it/rot|after"
}

echo "mosquitto clients: $({ mosquitto_sub --help || true; } | sed -n 2p); $(openssl version)"

start_tls_broker a false "$PKI/server-rsa.crt" "$PKI/server-rsa.key"
check "A: QoS 0/1/2 round trip over TLS (RSA PKCS#1 server key)" a_round_trip
check "A: TLS and TCP clients together" a_tls_and_tcp
check "A: TLS 1.2 and 1.3 served, TLS 1.1 refused" a_versions
check "A: host name and IP address verify; a client trusting another CA refuses" a_names
stop_broker || FAILED_CHECKS+=("A: clean shutdown")

secret_swap "$PKI/secret" "$PKI/server-ec.crt" "$PKI/server-ec.key"
start_tls_broker b true "$PKI/secret/tls.crt" "$PKI/secret/tls.key"
check "B: mutual TLS round trip (EC SEC1 server key, EC PKCS#8 client key)" b_mtls_round_trip
check "B: no client certificate and another CA's certificate refused" b_refusals
check "B: rotation by Secret symlink swap; broken swap keeps the old certificate" b_rotation
check_summary "mosquitto_tls"
