#!/usr/bin/env bash
# Checks the images scripts/build-images.sh made, by running them with podman:
#
#   1. both images: non-root user 65532:65532, the OCI labels, the exposed ports
#   2. hmq:TAG started with no config file (embedded defaults) on free loopback ports, on the
#      host network: /readyz answers 200, the process runs as uid 65532, mosquitto_sub receives
#      what mosquitto_pub sends through it, and `podman stop` (SIGTERM) ends it with status 0
#   3. `hmq-operator:TAG crd` prints exactly crds/mqttclusters.hmq.io.yaml
#
# Usage: images/test-images.sh [--tag TAG] [--remove-images]
#   --tag TAG          the images' tag (default: dev)
#   --remove-images    remove hmq:TAG and hmq-operator:TAG at the end (pass or fail)
# Environment: STORAGE_DRIVER (default vfs, as in build-images.sh). Needs podman, runc, curl,
# mosquitto_pub/mosquitto_sub and python3. Every wait is bounded; all traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=dev
remove_images=0
while (($#)); do
    case $1 in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --remove-images) remove_images=1; shift ;;
    *) echo "test-images: unknown argument $1" >&2; exit 2 ;;
    esac
done

podman_cmd=(podman --storage-driver "${STORAGE_DRIVER:-vfs}" --cgroup-manager cgroupfs)
run_flags=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --network host)
broker_image=localhost/hmq:$tag
operator_image=localhost/hmq-operator:$tag
container=hmq-image-test-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/hmq-image-test.XXXXXX")
passed=0
sub_pid=""

cleanup() {
    [[ -z $sub_pid ]] || kill "$sub_pid" 2>/dev/null || true
    timeout 60 "${podman_cmd[@]}" rm -f -t 0 "$container" >/dev/null 2>&1 || true
    if ((remove_images)); then
        timeout 60 "${podman_cmd[@]}" rmi -f "$broker_image" "$operator_image" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    if timeout 10 "${podman_cmd[@]}" container exists "$container" 2>/dev/null; then
        echo "--- container log:" >&2
        timeout 10 "${podman_cmd[@]}" logs "$container" 2>&1 | tail -n 30 >&2 || true
    fi
    exit 1
}
ok() {
    passed=$((passed + 1))
    echo "ok   $*"
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
# Go template for an image's exposed ports, e.g. "1883/tcp 8080/tcp ".
# shellcheck disable=SC2016
ports_format='{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}'
inspect() {
    timeout 30 "${podman_cmd[@]}" image inspect --format "$2" "$1"
}

# 1. What the images declare.
for image in "$broker_image" "$operator_image"; do
    name=${image#localhost/}
    name=${name%:*}
    [[ $(inspect "$image" '{{.Config.User}}') == 65532:65532 ]] ||
        fail "$image: user is $(inspect "$image" '{{.Config.User}}'), not 65532:65532"
    for label in title description source licenses version; do
        value=$(inspect "$image" "{{index .Config.Labels \"org.opencontainers.image.$label\"}}")
        [[ -n $value && $value != '<no value>' ]] || fail "$image: no org.opencontainers.image.$label label"
    done
    [[ $(inspect "$image" '{{index .Config.Labels "org.opencontainers.image.title"}}') == "$name" ]] ||
        fail "$image: title label is not $name"
    [[ $(inspect "$image" '{{index .Config.Labels "org.opencontainers.image.licenses"}}') == Apache-2.0 ]] ||
        fail "$image: licenses label is not Apache-2.0"
    size=$(inspect "$image" '{{.Size}}')
    ok "$image: user 65532:65532, OCI labels, ports $(inspect "$image" "$ports_format")size $size bytes"
done
exposed=$(inspect "$broker_image" "$ports_format")
for port in 1883/tcp 8883/tcp 8080/tcp 1993/tcp; do
    [[ " $exposed" == *" $port "* ]] || fail "$broker_image does not expose $port (exposes: $exposed)"
done
[[ $(inspect "$operator_image" "$ports_format") == "8080/tcp " ]] ||
    fail "$operator_image does not expose exactly 8080/tcp"
ok "exposed ports: hmq $exposed; hmq-operator 8080/tcp"

# 2. The broker image, with its embedded defaults and ports chosen by flags.
mqtt=$(free_port) http=$(free_port)
timeout 120 "${podman_cmd[@]}" run -d --name "$container" "${run_flags[@]}" "$broker_image" \
    --host 127.0.0.1 -p "$mqtt" --http-port "$http" >/dev/null ||
    fail "podman run $broker_image"
started=$SECONDS
ready=""
for ((i = 0; i < 100; i++)); do
    ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$http/readyz" || true)
    [[ $ready == 200 ]] && break
    [[ $(timeout 10 "${podman_cmd[@]}" inspect --format '{{.State.Running}}' "$container") == true ]] ||
        fail "the broker container stopped before it was ready"
    sleep 0.2
done
[[ $ready == 200 ]] || fail "/readyz on 127.0.0.1:$http answered ${ready:-nothing}, not 200, within 20 s"
ok "hmq container ready in $((SECONDS - started)) s: /readyz 200 on 127.0.0.1:$http"

pid=$(timeout 10 "${podman_cmd[@]}" inspect --format '{{.State.Pid}}' "$container")
uids=$(awk '/^Uid:/ { print $2, $3 }' "/proc/$pid/status")
[[ $uids == "65532 65532" ]] || fail "the broker runs with uids $uids, not 65532"
ok "the broker process (pid $pid) runs as uid 65532"

timeout 20 mosquitto_sub -h 127.0.0.1 -p "$mqtt" -t 'image-test/#' -q 1 -C 1 -W 15 -v \
    >"$work/sub.out" 2>"$work/sub.err" &
sub_pid=$!
for ((i = 0; i < 40; i++)); do
    timeout 10 mosquitto_pub -h 127.0.0.1 -p "$mqtt" -t image-test/hello -q 1 -m "from the image" ||
        fail "mosquitto_pub to 127.0.0.1:$mqtt"
    kill -0 "$sub_pid" 2>/dev/null || break
    sleep 0.25
done
wait "$sub_pid" || fail "mosquitto_sub: $(cat "$work/sub.err")"
sub_pid=""
[[ $(cat "$work/sub.out") == "image-test/hello from the image" ]] ||
    fail "mosquitto_sub received '$(cat "$work/sub.out")'"
ok "mosquitto_pub -> hmq container -> mosquitto_sub on 127.0.0.1:$mqtt"

started=$SECONDS
timeout 60 "${podman_cmd[@]}" stop -t 30 "$container" >/dev/null || fail "podman stop"
status=$(timeout 10 "${podman_cmd[@]}" inspect --format '{{.State.ExitCode}}' "$container")
[[ $status == 0 ]] || fail "the broker exited with status $status on SIGTERM, not 0"
ok "podman stop (SIGTERM): the broker exited 0 in $((SECONDS - started)) s"
timeout 60 "${podman_cmd[@]}" rm "$container" >/dev/null || fail "podman rm $container"

# 3. The operator image prints the CRD in the repository.
timeout 120 "${podman_cmd[@]}" run --rm "${run_flags[@]}" "$operator_image" crd >"$work/crd.yaml" ||
    fail "podman run $operator_image crd"
cmp -s "$work/crd.yaml" crds/mqttclusters.hmq.io.yaml ||
    fail "hmq-operator crd in the image differs from crds/mqttclusters.hmq.io.yaml"
ok "hmq-operator crd (in the image) = crds/mqttclusters.hmq.io.yaml"

echo "test-images: $passed checks passed"
