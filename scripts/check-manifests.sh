#!/usr/bin/env bash
# Offline checks of the Helm chart (charts/hmq-operator) and the plain manifests (manifests/),
# run by scripts/test-all.sh (section 5). No cluster is involved: lint, template and schemas.
#
#   1. generated files match their sources (scripts/render-manifests.sh --check): the chart's
#      CRD copy, its RBAC rules (`hmq-operator rbac`) and manifests/install.yaml
#   2. helm lint --strict with the default values and ci/all-on-values.yaml; values.schema.json
#      rejects bad values
#   3. helm template (default values; everything on, with --api-versions monitoring.coreos.com/v1)
#      and install.yaml and the examples: built-in kinds pass kubernetes-validate --strict, and
#      no other kind slips through unvalidated
#   4. MqttClusters (chart, examples) against the CRD's schema (python jsonschema) and through
#      `hmq-operator render` (the operator's own validation: ACL, config, TLS rules)
#   5. cert-manager Certificates/Issuers and ServiceMonitors against their projects' published
#      schemas (@kubernetes-models, Node), and how the objects refer to each other
#
# Needs: HELM (default helm), kubernetes-validate, python3 with jsonschema and PyYAML, node and
# npm, and HMQ_OPERATOR_BIN (or cargo to build it).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM=${HELM:-helm}
export HELM
if [[ -z ${HMQ_OPERATOR_BIN:-} ]]; then
    cargo build -q -p hmq-operator --bin hmq-operator
    HMQ_OPERATOR_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/hmq-operator"
fi
export HMQ_OPERATOR_BIN
chart=charts/hmq-operator
work=$(mktemp -d "${TMPDIR:-/tmp}/hmq-chart.XXXXXX")
trap 'rm -rf "$work"' EXIT

step() { printf -- '--- %s\n' "$*"; }
fail() {
    echo "check-manifests: FAILED: $*" >&2
    exit 1
}

# The lowest Kubernetes version the chart claims (its kubeVersion): every object is validated
# against it and against kubernetes-validate's newest.
lowest_k8s=$(sed -n 's/^kubeVersion: ">=\([0-9.]*\)-0"$/\1/p' charts/hmq-operator/Chart.yaml)
[[ -n $lowest_k8s ]] || fail "no kubeVersion \">=X.Y.Z-0\" in charts/hmq-operator/Chart.yaml"

# kubernetes-validate --strict over files, at the lowest claimed and the newest version; it only
# warns on kinds it has no schema for, so those warnings are allowed only for the kinds checked
# by steps 4 and 5.
k8s_validate() {
    local log=$work/kv.log
    { kubernetes-validate --strict --quiet -k "$lowest_k8s" "$@" &&
        kubernetes-validate --strict --quiet "$@"; } >"$log" 2>&1 || {
        cat "$log"
        return 1
    }
    cat "$log"
    if grep -v -E "Couldn't find schema for kind (MqttCluster|ServiceMonitor|Certificate|Issuer) " "$log" |
        grep -q .; then
        return 1
    fi
}

step "1. generated files"
scripts/render-manifests.sh --check || fail "run scripts/render-manifests.sh and commit the result"

step "2. helm lint"
"$HELM" version --short
"$HELM" lint --strict "$chart" || fail "helm lint (default values)"
"$HELM" lint --strict "$chart" -f "$chart/ci/all-on-values.yaml" || fail "helm lint (all on)"
for bad in logFormat=xml replicas=-1 image.pullPolicy=Sometimes leaderElection.leaseDuration=1 \
    unknownKey=1; do
    if "$HELM" template x "$chart" --set "$bad" >/dev/null 2>&1; then
        fail "values.schema.json accepts --set $bad"
    fi
done
if "$HELM" template x "$chart" --set replicas=2 --set leaderElection.enabled=false >/dev/null 2>&1; then
    fail "the chart renders 2 replicas without leader election"
fi
echo "ok   the values schema and the chart refuse bad values"

step "3. helm template + kubernetes-validate --strict"
"$HELM" template hmq-operator "$chart" --namespace hmq-system >"$work/default.yaml"
"$HELM" template hmq-operator "$chart" --namespace hmq-system -f "$chart/ci/all-on-values.yaml" \
    --api-versions monitoring.coreos.com/v1 >"$work/all-on.yaml"
"$HELM" template hmq-operator "$chart" --namespace hmq-system -f "$chart/ci/all-on-values.yaml" \
    >"$work/all-on-no-monitoring.yaml"
if grep -q '^kind: ServiceMonitor' "$work/all-on-no-monitoring.yaml"; then
    fail "a ServiceMonitor is rendered without monitoring.coreos.com/v1"
fi
echo "ok   no ServiceMonitor without monitoring.coreos.com/v1"
k8s_validate "$work/default.yaml" "$work/all-on.yaml" manifests/install.yaml manifests/examples/*.yaml ||
    fail "kubernetes-validate --strict"
echo "ok   built-in kinds pass kubernetes-validate --strict"

step "4. MqttClusters: CRD schema and hmq-operator render"
python3 operator/tests/scripts/validate_examples.py crds/mqttclusters.hmq.io.yaml \
    "$work/all-on.yaml" manifests/examples/*.yaml || fail "MqttClusters against the CRD schema"
for file in "$work/all-on.yaml" manifests/examples/*.yaml; do
    # The whole file: render passes the other documents (Certificate, Secret) through.
    rendered=$work/rendered-$(basename "$file")
    "$HMQ_OPERATOR_BIN" render --service-monitor-crd -f "$file" >"$rendered" ||
        fail "hmq-operator render refuses $file"
    k8s_validate "$rendered" || fail "objects rendered from $file"
    echo "ok   $file: hmq-operator render, objects pass kubernetes-validate --strict"
done

step "5. cert-manager and Prometheus Operator resources"
check_js=scripts/manifest-check
if [[ ! -d $check_js/node_modules ||
    $check_js/package-lock.json -nt $check_js/node_modules/.package-lock.json ]]; then
    (cd "$check_js" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) ||
        fail "npm ci in $check_js"
fi
# The ServiceMonitor the operator makes for the brokers (step 4) is checked too.
node "$check_js/validate-crs.mjs" "$work/all-on.yaml" "$work/rendered-metrics-servicemonitor.yaml" \
    manifests/examples/*.yaml || fail "cert-manager / ServiceMonitor schemas"
python3 "$check_js/check_rendered.py" "$work/default.yaml" "$work/all-on.yaml" \
    "$chart/dashboards/hmq-broker.json" manifests/examples/tls-cert-manager.yaml ||
    fail "references between the objects"
echo "check-manifests: all passed"
