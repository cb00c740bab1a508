#!/bin/sh
# GET nginx's own health endpoint with whatever client the base image has:
# busybox/GNU wget (alpine), curl, or bash's /dev/tcp (Debian minimal).
set -eu
port="${TRANZIT_NGINX_PORT:-8080}"
url="http://127.0.0.1:$port/nginx-health"
if command -v wget >/dev/null 2>&1; then
    exec wget -q -T 2 -O /dev/null "$url"
elif command -v curl >/dev/null 2>&1; then
    exec curl -fsS -m 2 -o /dev/null "$url"
elif command -v bash >/dev/null 2>&1; then
    exec bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /nginx-health HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3
        IFS= read -r -t 2 status <&3 || exit 1
        case "$status" in *" 200 "*) exit 0 ;; *) exit 1 ;; esac
    ' healthcheck "$port"
fi
echo "tranzit-nginx-health: no wget, curl or bash in this image" >&2
exit 1
