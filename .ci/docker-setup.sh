#!/usr/bin/env bash
# Make a Docker engine available for the Docker sandbox backend (idempotent, bounded in time).
#
# - returns at once when `docker info` already works;
# - installs Debian's docker.io when `dockerd` is missing (root only; needs only the Debian mirror);
# - starts `dockerd` in the background, logging to $DOCKERD_LOG, and waits until it answers;
# - if the engine cannot set up its default bridge network (no iptables/netfilter in the kernel),
#   retries once without it: the sandbox's containers use no network at all;
# - never hangs: exits non-zero with a clear message after $DOCKER_SETUP_TIMEOUT seconds.
set -u

DOCKER_SETUP_TIMEOUT="${DOCKER_SETUP_TIMEOUT:-60}"
APT_TIMEOUT="${APT_TIMEOUT:-300}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/laimark-dockerd.log}"
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin"

say() { echo "docker-setup: $*" >&2; }

engine_answers() {
    if command -v docker >/dev/null 2>&1; then
        timeout 10 docker info >/dev/null 2>&1
    else
        timeout 10 python3 -c 'import docker; docker.from_env().ping()' >/dev/null 2>&1
    fi
}

wait_for_engine() {  # $1: pid of dockerd, $2: seconds
    local pid="$1" deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        engine_answers && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

dockerd_pid() {  # pid of a running dockerd, if any (no procps needed)
    local proc
    for proc in /proc/[0-9]*; do
        if [ "$(cat "$proc/comm" 2>/dev/null)" = dockerd ]; then
            echo "${proc#/proc/}"
            return 0
        fi
    done
    return 1
}

start_dockerd() {  # extra dockerd flags as arguments; prints dockerd's pid
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    setsid nohup dockerd "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    echo $!
}

if engine_answers; then
    say "engine already running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        say "dockerd is not installed and this is not root: install docker.io (or Docker Engine) first"
        exit 1
    fi
    say "installing docker.io from the Debian mirror"
    export DEBIAN_FRONTEND=noninteractive
    if ! { timeout "$APT_TIMEOUT" apt-get update -qq &&
        timeout "$APT_TIMEOUT" apt-get install -y -qq --no-install-recommends docker.io; } >/tmp/docker-setup-apt.log 2>&1; then
        tail -20 /tmp/docker-setup-apt.log >&2
        say "could not install docker.io (log: /tmp/docker-setup-apt.log)"
        exit 1
    fi
fi

if [ "$(id -u)" != 0 ]; then
    say "no engine answers and only root can start dockerd here: run 'sudo dockerd &' or 'sudo systemctl start docker'"
    exit 1
fi

if pid="$(dockerd_pid)"; then
    # A dockerd exists but does not answer yet (starting up, or left over): give it the budget.
    say "dockerd (pid $pid) already started; waiting for it"
    if wait_for_engine "$pid" "$DOCKER_SETUP_TIMEOUT"; then
        say "engine ready"
        exit 0
    fi
    say "dockerd (pid $pid) does not answer after ${DOCKER_SETUP_TIMEOUT}s; see $DOCKERD_LOG"
    exit 1
fi

rm -f /var/run/docker.pid
say "starting dockerd (log: $DOCKERD_LOG)"
started=$SECONDS
pid="$(start_dockerd)"
if wait_for_engine "$pid" "$DOCKER_SETUP_TIMEOUT"; then
    say "engine ready after $((SECONDS - started))s"
    exit 0
fi

if ! kill -0 "$pid" 2>/dev/null && ((SECONDS - started < DOCKER_SETUP_TIMEOUT)); then
    say "dockerd exited early; retrying without the default bridge network (iptables)"
    rm -f /var/run/docker.pid
    pid="$(start_dockerd --bridge=none --iptables=false --ip6tables=false)"
    if wait_for_engine "$pid" $((DOCKER_SETUP_TIMEOUT - (SECONDS - started))); then
        say "engine ready after $((SECONDS - started))s (no bridge network)"
        exit 0
    fi
fi

kill "$pid" 2>/dev/null
tail -20 "$DOCKERD_LOG" >&2
say "no Docker engine after ${DOCKER_SETUP_TIMEOUT}s; see $DOCKERD_LOG"
exit 1
