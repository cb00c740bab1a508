#!/usr/bin/env bash
# Bring the example tranzit stack up on this machine and print its URL.
#
#   scripts/up.sh
#
# 1. an engine, compose and base images (scripts/docker-env.sh: uses a running
#    engine, else installs/starts one as root on Debian/Ubuntu; builds local base
#    images when the official ones cannot be pulled);
# 2. the example project generated from cookiecutter-tranzit with its defaults
#    into build/example/ (its .env, with a generated secret, is kept across runs);
# 3. tranzit's runtime and nginx images from docker/, then the project's images;
# 4. docker compose up -d --wait, then a request through nginx.
#
# Environment: TRANZIT_PUBLISH_PORT (default 8080), TRANZIT_OFFLINE_BASE=1|0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'up.sh: error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf '  %s\n' "${@:2}" >&2
    exit 1
}

step "Docker engine, compose and base images"
env_lines="$("$ROOT/scripts/docker-env.sh" --env)" || die "the Docker environment is not ready" "see the messages above"
eval "$env_lines"
export PYTHON_IMAGE NGINX_IMAGE PIP_OFFLINE REDIS_IMAGE
read -r -a compose <<<"$COMPOSE"

version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' tranzit/__init__.py)"
[ -n "$version" ] || die "cannot read __version__ from tranzit/__init__.py"
export TRANZIT_RUNTIME_IMAGE="${TRANZIT_RUNTIME_IMAGE:-ghcr.io/tranzit/runtime:$version}"
export TRANZIT_NGINX_IMAGE="${TRANZIT_NGINX_IMAGE:-ghcr.io/tranzit/nginx:$version}"

step "Generating the example project from cookiecutter-tranzit (defaults) into build/example"
python3 -c 'import cookiecutter' 2>/dev/null ||
    die "the cookiecutter package is missing" "run: python3 -m pip install cookiecutter   (or: pip install -e .)"
mkdir -p build/example
saved_env=""
if [ -d build/example/my_tranzit_site ] && [ -f build/example/my_tranzit_site/.env ]; then
    saved_env="$(cat build/example/my_tranzit_site/.env)"
fi
project_dir="$(python3 - <<'PY'
from cookiecutter.main import cookiecutter
print(cookiecutter("cookiecutter-tranzit", no_input=True, output_dir="build/example",
                   overwrite_if_exists=True))
PY
)" || die "generating the project failed" "see the cookiecutter error above"
export TRANZIT_EXAMPLE_DIR="${project_dir#"$ROOT"/}"
if [ -n "$saved_env" ]; then
    printf '%s\n' "$saved_env" >"$project_dir/.env"
    echo "kept $TRANZIT_EXAMPLE_DIR/.env" >&2
else
    secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
    sed "s|^TRANZIT_SECRET_KEY=.*|TRANZIT_SECRET_KEY=$secret|" "$project_dir/.env.example" >"$project_dir/.env"
    echo "wrote $TRANZIT_EXAMPLE_DIR/.env with a new TRANZIT_SECRET_KEY" >&2
fi

publish="${TRANZIT_PUBLISH_PORT:-$(sed -n 's/^TRANZIT_PUBLISH_PORT=//p' "$project_dir/.env")}"
publish="${publish:-8080}"
export TRANZIT_PUBLISH_PORT="$publish"
port="${publish##*:}"
if ! "${compose[@]}" ps -q nginx 2>/dev/null | grep -q .; then
    python3 - "$port" <<'PY' || die "port $port is in use" "set another one: TRANZIT_PUBLISH_PORT=8081 scripts/up.sh"
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
PY
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

url="http://localhost:$port/"
python3 - "$url" <<'PY' || die "the stack is up but $url does not answer 200" "run: docker compose logs nginx web"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
step "The example stack is up: $url"
echo "  stop it: docker compose down   (from $ROOT)" >&2
echo "$url"
