#!/bin/sh
# Entrypoint of local/postgres:bookworm, the offline stand-in for the official
# postgres image (scripts/docker-env.sh builds it from Debian's postgresql-15).
# It reads what the official entrypoint reads, so compose.yaml runs either
# image unchanged: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and PGDATA.
# On an empty PGDATA it creates the cluster once; afterwards it only starts it.
# It runs as the user postgres (compose: `user: postgres`, no capabilities).
set -eu

die() {
    printf 'postgres-entrypoint: %s\n' "$*" >&2
    exit 1
}

# `docker run IMAGE -c key=value` means postgres with those options; any other
# command (psql, sh) runs as it is, as with the official image.
case "${1:-}" in
    -*) set -- postgres "$@" ;;
esac
[ "${1:-}" = postgres ] || exec "$@"
shift

if [ "$(id -u)" = 0 ]; then
    # Root (a plain `docker run`): drop to postgres; initdb and postgres refuse root.
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

# postgres refuses a data directory it does not own; say which one and how to fix it.
mkdir -p "$PGDATA" 2>/dev/null ||
    die "cannot create PGDATA=$PGDATA as $(id -un) (uid $(id -u)); mount a volume there"
owner="$(stat -c %u "$PGDATA")"
if [ "$owner" != "$(id -u)" ] || [ ! -w "$PGDATA" ]; then
    die "PGDATA=$PGDATA belongs to uid $owner, not to $(id -un) (uid $(id -u));" \
        "chown it to uid $(id -u) with mode 0700, or start on a new volume"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -n "${POSTGRES_PASSWORD:-}" ] ||
        die "POSTGRES_PASSWORD is empty; set it (compose: in .env) before the first start"
    # The password goes to initdb in a file, not on a command line others can read.
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    # Local socket connections are trusted (only this container has the socket);
    # over TCP every user needs the password.
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 ||
        die "initdb failed in PGDATA=$PGDATA (its output is above)"
    rm -f "$pwfile"
    # initdb's pg_hba.conf allows TCP from localhost only; the other containers
    # of the project connect from their own addresses.
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # A temporary server on the socket only: nothing can connect over TCP
        # before the database exists.
        pg_ctl --wait --silent -o "-c listen_addresses=''" start
        createdb --username="$POSTGRES_USER" -- "$POSTGRES_DB" || {
            pg_ctl --wait --silent --mode=fast stop
            die "could not create the database $POSTGRES_DB"
        }
        pg_ctl --wait --silent --mode=fast stop
    fi
    echo "postgres-entrypoint: created the cluster in $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi

exec postgres -c listen_addresses='*' "$@"
