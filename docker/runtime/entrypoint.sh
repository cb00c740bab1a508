#!/bin/sh
# The runtime image's entrypoint. Roles:
#   http  the project under gunicorn with aiohttp's worker (tranzit serve http)
#   ws    the websocket server (tranzit serve ws)
#   migrate  the project's database migrations, then exit (tranzit migrate)
# Anything else is executed as given (a shell, a one-off command).
# `exec` keeps the server as PID 1 so it receives the stop signal itself.
set -eu
role="${1:-http}"
case "$role" in
    http | ws)
        shift || true
        exec tranzit serve "$role" "$@"
        ;;
    migrate)
        shift
        exec tranzit migrate "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
