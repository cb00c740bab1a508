#!/usr/bin/env bash
# Bring the example tranzit stack up on this machine and print its URL.
#
#   scripts/up.sh
#
# 1. a virtualenv with this checkout's tranzit (TRANZIT_VENV, default .venv),
#    created when missing: nothing is needed from the machine's Python but venv;
# 2. an engine, compose and base images (scripts/docker-env.sh: uses a running
#    engine, else installs/starts one as root on Debian/Ubuntu; builds local base
#    images when the official ones cannot be pulled);
# 3. the example project, `tranzit project --no-input`, into build/example/
#    (its .env, with a generated secret, is kept across runs);
# 4. tranzit's runtime and nginx images from docker/, then the project's images;
# 5. docker compose up -d --wait, then a request through nginx: over HTTPS
#    (https://localhost:8443/, a self-signed certificate made on first start)
#    unless the project's .env says TRANZIT_TLS=off (then http://localhost:8080/).
#
# Environment: TRANZIT_PUBLISH_PORT (default 8080), TRANZIT_PUBLISH_HTTPS_PORT
# (default 8443), TRANZIT_TLS (default: the project's .env), TRANZIT_OFFLINE_BASE=1|0,
# TRANZIT_VENV, TRANZIT_BUILD_DIR (default build/; the project goes in its example/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'up.sh: error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf '  %s\n' "${@:2}" >&2
    exit 1
}

VENV="${TRANZIT_VENV:-$ROOT/.venv}"
step "Python environment: $VENV with this checkout's tranzit"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed" "Debian/Ubuntu: apt-get install python3-venv"
fi
# An editable install of this checkout, unless the venv already has exactly that
# (-I: not the ./tranzit of the working directory, only what the venv has).
if ! "$VENV/bin/python" -I - "$ROOT" <<'PY' 2>/dev/null; then
import pathlib, sys
import cookiecutter, tranzit
sys.exit(pathlib.Path(tranzit.__file__).parent != pathlib.Path(sys.argv[1], "tranzit"))
PY
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT" \
        2> >(grep -v '^WARNING: Location' >&2) ||
        die "installing this checkout into $VENV failed" "see the pip output above"
fi
export PATH="$VENV/bin:$PATH"

step "Docker engine, compose and base images"
env_lines="$("$ROOT/scripts/docker-env.sh" --env)" || die "the Docker environment is not ready" "see the messages above"
eval "$env_lines"
export PYTHON_IMAGE BUILD_IMAGE NGINX_IMAGE PIP_OFFLINE REDIS_IMAGE POSTGRES_IMAGE CERTBOT_IMAGE
read -r -a compose <<<"$COMPOSE"

version="$(python -c 'import tranzit; print(tranzit.__version__)')"
export TRANZIT_RUNTIME_IMAGE="${TRANZIT_RUNTIME_IMAGE:-ghcr.io/tranzit/runtime:$version}"
export TRANZIT_NGINX_IMAGE="${TRANZIT_NGINX_IMAGE:-ghcr.io/tranzit/nginx:$version}"

out="${TRANZIT_BUILD_DIR:-$ROOT/build}/example"
step "Generating the example project (tranzit project, the template's defaults) into $out"
mkdir -p "$out"
started="$(mktemp)"
trap 'rm -f "$started"' EXIT
# --force writes the template over an earlier run's copy; .env is not a template
# file, so the post-generation hook keeps an existing one (and its secret).
created="$(tranzit project --no-input --force --output-dir "$out")" ||
    die "generating the project failed" "see the message above"
project_dir="$(printf '%s\n' "$created" | sed -n 's/^Created //p')"
[ -f "$project_dir/server.yml" ] || die "tranzit project did not say where it created the project" "$created"
if [ "$project_dir/.env" -ot "$started" ]; then
    echo "kept $project_dir/.env" >&2
else
    echo "wrote $project_dir/.env with a new TRANZIT_SECRET_KEY" >&2
fi
export TRANZIT_EXAMPLE_DIR="$project_dir"

# A setting: the shell's value, else the project's .env, else the default.
setting() {
    local value="${!1:-}"
    [ -n "$value" ] || value="$(sed -n "s/^$1=//p" "$project_dir/.env" | tail -n 1)"
    printf '%s' "${value:-$2}"
}
tls="$(setting TRANZIT_TLS self-signed)"
export TRANZIT_PUBLISH_PORT="$(setting TRANZIT_PUBLISH_PORT 8080)"
export TRANZIT_PUBLISH_HTTPS_PORT="$(setting TRANZIT_PUBLISH_HTTPS_PORT 8443)"
if ! "${compose[@]}" ps -q nginx 2>/dev/null | grep -q .; then
    for publish in "$TRANZIT_PUBLISH_PORT" "$TRANZIT_PUBLISH_HTTPS_PORT"; do
        python3 - "${publish##*:}" <<'PY' || die "port ${publish##*:} is in use" "set another one: TRANZIT_PUBLISH_PORT=8081 TRANZIT_PUBLISH_HTTPS_PORT=8444 scripts/up.sh"
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
PY
    done
fi

step "Building tranzit's images: $TRANZIT_RUNTIME_IMAGE and $TRANZIT_NGINX_IMAGE (base: $PYTHON_IMAGE, $NGINX_IMAGE)"
"${compose[@]}" --profile images build runtime nginx-base || die "building tranzit's images failed" "see the build output above"

step "Building the example project's images"
"${compose[@]}" build || die "building the project failed" "see the build output above"

step "Starting web, ws and nginx (docker compose up -d --wait)"
if ! "${compose[@]}" up -d --wait --wait-timeout 180 --pull never --remove-orphans; then
    "${compose[@]}" logs --tail 50 >&2 || true
    die "the stack did not become healthy" "logs above; inspect with: docker compose ps / docker compose logs"
fi

if [ "$tls" = off ]; then
    url="http://localhost:${TRANZIT_PUBLISH_PORT##*:}/"
else
    url="https://localhost:${TRANZIT_PUBLISH_HTTPS_PORT##*:}/"
fi
# Over HTTPS with the stack's own certificate (self-signed on first start: not
# verified here, your browser asks you to accept it once).
python3 - "$url" <<'PY' || die "the stack is up but $url does not answer 200" "run: docker compose logs nginx web"
import ssl, sys, urllib.request
context = ssl._create_unverified_context()
with urllib.request.urlopen(sys.argv[1], timeout=10, context=context) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
step "The example stack is up: $url"
# compose.yaml finds the project at build/example/my_tranzit_site unless told.
where=""
[ "$project_dir" = "$ROOT/build/example/my_tranzit_site" ] || where="TRANZIT_EXAMPLE_DIR=$(printf %q "$project_dir") "
echo "  stop it: ${where}docker compose down   (from $ROOT)" >&2
echo "$url"
