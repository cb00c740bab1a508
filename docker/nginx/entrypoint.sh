#!/bin/sh
# Render the nginx config from its template and run nginx in the foreground.
# Only ${TRANZIT_NGINX_*} placeholders are replaced (nginx's own $variables stay),
# so no envsubst is needed and the root filesystem can stay read-only:
# everything nginx writes goes below /tmp.
set -eu

template=/etc/tranzit-nginx/nginx.conf.template
conf_dir=/tmp/nginx
mkdir -p "$conf_dir"

# SERVER_NAMES is the stack's ALLOWED_HOSTS: comma separated, "*" for any name.
names="${TRANZIT_NGINX_SERVER_NAMES:-}"
[ "$names" = "*" ] && names="~."
TRANZIT_NGINX_SERVER_NAMES=$(printf '%s' "$names" | tr ',' ' ')

script=""
for name in PORT WEB WS RESOLVER WS_READ_TIMEOUT MAX_BODY STATIC_MAX_AGE WORKER_CONNECTIONS SERVER_NAMES; do
    eval "value=\${TRANZIT_NGINX_$name:?TRANZIT_NGINX_$name must be set}"
    allowed='A-Za-z0-9.:_-'
    [ "$name" = SERVER_NAMES ] && allowed=']A-Za-z0-9.:_~[ -'
    case "$value" in
        *[!$allowed]*)
            echo "tranzit-nginx: TRANZIT_NGINX_$name: expected host/port/duration characters, found '$value'" >&2
            exit 2
            ;;
    esac
    script="${script}s|\${TRANZIT_NGINX_$name}|$value|g;"
done
sed -e "$script" "$template" >"$conf_dir/nginx.conf"

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec nginx -e stderr -c "$conf_dir/nginx.conf" -g "daemon off;"
