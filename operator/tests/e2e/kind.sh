#!/usr/bin/env bash
# End-to-end test of hmq-operator on a real Kubernetes cluster (kind or k3d). Opt-in: it needs a
# cluster, a broker image the cluster can pull, kubectl, mosquitto_pub/sub and openssl, so it is
# not part of scripts/test-all.sh.
#
#   HMQ_E2E=1 HMQ_IMAGE=hmq:dev operator/tests/e2e/kind.sh
#
# Environment:
#   HMQ_E2E=1        required: without it the script only says how to run it, and exits 0
#   HMQ_IMAGE        the broker image (e.g. built from this checkout and loaded with
#                    `kind load docker-image hmq:dev` or `k3d image import hmq:dev`)
#   KUBECONFIG       the cluster (default: kubectl's current context). The script creates and
#                    deletes the namespace hmq-e2e; it refuses a context whose name does not
#                    contain "kind" or "k3d" unless HMQ_E2E_ANY_CONTEXT=1.
#
# The operator runs out of the cluster (cargo run, with the kubeconfig's credentials) with leader
# election on; the brokers run in the cluster. Checked: the CRD installs; an MqttCluster becomes
# Running with every condition as documented; MQTT through the client Service (port-forward);
# a config change rolls the pods; an invalid ACL sets ConfigValid=False and restarts nothing;
# `kubectl scale` works through the scale subresource; a rotated TLS Secret rolls the pods;
# deleting the MqttCluster garbage-collects everything it owned.
set -euo pipefail

if [[ ${HMQ_E2E:-} != 1 ]]; then
    echo "skipped: set HMQ_E2E=1 (and HMQ_IMAGE) to run the end-to-end test against a kind/k3d cluster"
    exit 0
fi
: "${HMQ_IMAGE:?set HMQ_IMAGE to a broker image the cluster can pull}"
root=$(cd "$(dirname "$0")/../../.." && pwd)
ns=hmq-e2e
context=$(kubectl config current-context)
if [[ $context != *kind* && $context != *k3d* && ${HMQ_E2E_ANY_CONTEXT:-} != 1 ]]; then
    echo "refusing to run against context $context (set HMQ_E2E_ANY_CONTEXT=1 to allow)" >&2
    exit 1
fi
work=$(mktemp -d)
operator_pid=""
forward_pid=""
cleanup() {
    [[ -n $forward_pid ]] && kill "$forward_pid" 2>/dev/null
    [[ -n $operator_pid ]] && kill -TERM "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null
    kubectl delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
step() { echo "== $*"; }
fail() {
    echo "FAIL: $*" >&2
    kubectl -n "$ns" get mqc,sts,pods,svc,cm,pdb -o wide >&2 || true
    kubectl -n "$ns" get mqc e2e -o yaml >&2 || true
    exit 1
}
jsonpath() { kubectl -n "$ns" get "$1" -o "jsonpath=$2"; }
wait_phase() {
    kubectl -n "$ns" wait mqc/e2e --for="jsonpath={.status.phase}=$1" --timeout="${2:-240s}" ||
        fail "phase $1 not reached"
}

step "CRD and namespace"
kubectl apply --server-side -f "$root/crds/mqttclusters.hmq.io.yaml"
kubectl wait --for=condition=Established crd/mqttclusters.hmq.io --timeout=60s
kubectl create namespace "$ns"

step "operator (out of cluster)"
cargo build -q -p hmq-operator --manifest-path "$root/Cargo.toml"
"$root/target/debug/hmq-operator" run --http-addr 127.0.0.1:0 --lease-namespace "$ns" \
    --identity e2e --log-format text >"$work/operator.log" 2>&1 &
operator_pid=$!

step "Secrets: TLS (openssl) and passwords (hmq passwd)"
(
    cd "$work"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=e2e" \
        -addext "subjectAltName=DNS:localhost" -keyout tls.key -out tls.crt 2>/dev/null
    cp tls.crt ca.crt
)
kubectl -n "$ns" create secret generic e2e-tls --from-file="$work/tls.crt" \
    --from-file="$work/tls.key" --from-file="$work/ca.crt"
cargo build -q --release --bin hmq --manifest-path "$root/Cargo.toml"
echo secret-password | "$root/target/release/hmq" passwd --iterations 1000 "$work/passwordFile" alice
kubectl -n "$ns" create secret generic e2e-passwords --from-file=passwordFile="$work/passwordFile"

step "MqttCluster"
cat >"$work/cluster.yaml" <<EOF
apiVersion: hmq.io/v1alpha1
kind: MqttCluster
metadata: { name: e2e, namespace: $ns }
spec:
  replicas: 3
  image: $HMQ_IMAGE
  imagePullPolicy: IfNotPresent
  listeners:
    mqtts: { port: 8883 }
  tls: { secretName: e2e-tls }
  auth: { passwordSecretName: e2e-passwords }
  acl:
    rules:
      - { permission: allow, type: username, value: alice, access: publishSubscribe, topics: ["#"] }
EOF
kubectl apply --server-side -f "$work/cluster.yaml"
wait_phase Running
for type in Ready ConfigValid; do
    [[ $(jsonpath mqc/e2e "{.status.conditions[?(@.type==\"$type\")].status}") == True ]] ||
        fail "$type is not True"
done
[[ $(jsonpath mqc/e2e '{.status.readyReplicas}') == 3 ]] || fail "readyReplicas != 3"
for kind in configmap/e2e-config service/e2e-headless service/e2e statefulset/e2e pdb/e2e secret/e2e-cluster; do
    [[ $(jsonpath "$kind" '{.metadata.ownerReferences[0].name}') == e2e ]] || fail "$kind not owned"
done

step "MQTT through the client Service"
kubectl -n "$ns" port-forward svc/e2e 21883:1883 >/dev/null 2>&1 &
forward_pid=$!
sleep 3
mosquitto_sub -h 127.0.0.1 -p 21883 -u alice -P secret-password -t e2e/# -C 1 -W 10 >"$work/sub.out" &
sub=$!
sleep 1
mosquitto_pub -h 127.0.0.1 -p 21883 -u alice -P secret-password -t e2e/x -m hello -q 1
wait "$sub" || fail "no message through the Service"
[[ $(cat "$work/sub.out") == hello ]] || fail "received $(cat "$work/sub.out")"

step "config change rolls the pods"
hash=$(jsonpath mqc/e2e '{.status.configHash}')
kubectl -n "$ns" patch mqc e2e --type merge -p '{"spec":{"config":{"maxInflight":64}}}'
for _ in $(seq 60); do
    [[ $(jsonpath mqc/e2e '{.status.configHash}') != "$hash" ]] && break
    sleep 1
done
[[ $(jsonpath mqc/e2e '{.status.configHash}') != "$hash" ]] || fail "configHash did not change"
kubectl -n "$ns" rollout status statefulset/e2e --timeout=300s
wait_phase Running

step "an invalid ACL changes nothing running"
pods=$(jsonpath pods '{.items[*].metadata.uid}')
kubectl -n "$ns" patch mqc e2e --type merge \
    -p '{"spec":{"acl":{"rules":null,"raw":"allow clientid * 4 #\n"}}}'
kubectl -n "$ns" wait mqc/e2e --for=jsonpath='{.status.phase}'=Invalid --timeout=60s
jsonpath mqc/e2e '{.status.conditions[?(@.type=="ConfigValid")].message}' | grep -q 'unknown access' ||
    fail "ConfigValid message lacks the parser's words"
sleep 10
[[ $(jsonpath pods '{.items[*].metadata.uid}') == "$pods" ]] || fail "pods restarted"
kubectl -n "$ns" patch mqc e2e --type merge \
    -p '{"spec":{"acl":{"raw":null,"rules":[{"permission":"allow","type":"username","value":"alice","access":"publishSubscribe","topics":["#"]}]}}}'
wait_phase Running

step "kubectl scale (scale subresource)"
kubectl -n "$ns" scale mqc/e2e --replicas=2
kubectl -n "$ns" wait sts/e2e --for=jsonpath='{.spec.replicas}'=2 --timeout=60s
wait_phase Running

step "a rotated certificate rolls the pods"
secrets_hash=$(jsonpath sts/e2e '{.spec.template.metadata.annotations.hmq\.io/secrets-hash}')
(cd "$work" && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=e2e-2" \
    -keyout tls.key -out tls.crt 2>/dev/null && cp tls.crt ca.crt)
kubectl -n "$ns" create secret generic e2e-tls --from-file="$work/tls.crt" \
    --from-file="$work/tls.key" --from-file="$work/ca.crt" --dry-run=client -o yaml | kubectl apply -f -
for _ in $(seq 60); do
    [[ $(jsonpath sts/e2e '{.spec.template.metadata.annotations.hmq\.io/secrets-hash}') != "$secrets_hash" ]] && break
    sleep 1
done
[[ $(jsonpath sts/e2e '{.spec.template.metadata.annotations.hmq\.io/secrets-hash}') != "$secrets_hash" ]] ||
    fail "secrets-hash did not change"
kubectl -n "$ns" rollout status statefulset/e2e --timeout=300s

step "deleting the MqttCluster garbage-collects its objects"
kubectl -n "$ns" delete mqc e2e --wait=true
for _ in $(seq 60); do
    [[ -z $(kubectl -n "$ns" get sts,cm,svc,pdb -l app.kubernetes.io/instance=e2e -o name) ]] && break
    sleep 2
done
[[ -z $(kubectl -n "$ns" get sts,cm,svc,pdb -l app.kubernetes.io/instance=e2e -o name) ]] ||
    fail "owned objects remain"
echo "e2e: all checks passed"
