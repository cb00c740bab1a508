#!/bin/sh
# tranzit-nginx: render the nginx config from its templates and run nginx in
# the foreground.
#
#   tranzit-nginx           render, `nginx -t`, then run nginx (PID 1)
#   tranzit-nginx reload    render again (a new certificate, too) and reload the
#                           running nginx gracefully: old workers keep their open
#                           websockets until they close. A config that fails
#                           `nginx -t` is not loaded.
#   tranzit-nginx CMD ...   render, then run CMD instead of nginx
#
# Only ${TRANZIT_NGINX_*} placeholders are replaced (nginx's own $variables stay),
# so no envsubst is needed and the root filesystem can stay read-only:
# everything nginx writes goes below /tmp, a self-signed certificate into the
# volume at /var/lib/tranzit-nginx.
#
# TRANZIT_NGINX_TLS: off (plain HTTP), self-signed (made here), letsencrypt
# (certbot's; self-signed until it exists) or files (/etc/tranzit-nginx/certs).
# With TLS on, a watcher reloads nginx when the certificate files change.
set -eu

etc=/etc/tranzit-nginx
conf_dir=/tmp/nginx
self_signed_dir=/var/lib/tranzit-nginx/self-signed
# A self-signed certificate is made anew this long (30 days) before it expires.
renew_before=2592000

say() { echo "tranzit-nginx: $*" >&2; }
# A reload that fails says so: the running nginx keeps its config.
fail_prefix="tranzit-nginx"
[ "${1:-}" = reload ] && fail_prefix="tranzit-nginx: reload failed, nginx keeps its running config"
die() {
    echo "$fail_prefix: $*" >&2
    exit 2
}

mkdir -p "$conf_dir"
work=$(mktemp -d "$conf_dir/run.XXXXXX")
trap 'rm -rf "$work"' EXIT

mode="${TRANZIT_NGINX_TLS:-off}"
case "$mode" in
    off | self-signed | letsencrypt | files) ;;
    *) die "TRANZIT_NGINX_TLS: expected off, self-signed, letsencrypt or files, found '$mode'" ;;
esac

# SERVER_NAMES is the stack's ALLOWED_HOSTS: comma separated, "*" for any name.
names="${TRANZIT_NGINX_SERVER_NAMES:-}"
[ "$names" = "*" ] && names="~."
TRANZIT_NGINX_SERVER_NAMES=$(printf '%s' "$names" | tr ',' ' ')

# The sed script that fills in the placeholders. A value may hold only the
# characters of its kind, so no setting can add nginx directives.
script=""
substitute() { # NAME VALUE ALLOWED-CHARACTERS WHAT-THEY-ARE
    case "$2" in
        *[!$3]*) die "TRANZIT_NGINX_$1: expected $4, found '$2'" ;;
    esac
    script="${script}s|\${TRANZIT_NGINX_$1}|$2|g;"
}

for name in PORT WEB WS RESOLVER WS_READ_TIMEOUT MAX_BODY STATIC_MAX_AGE WORKER_CONNECTIONS SERVER_NAMES; do
    eval "value=\${TRANZIT_NGINX_$name:?TRANZIT_NGINX_$name must be set}"
    allowed='A-Za-z0-9.:_-'
    [ "$name" = SERVER_NAMES ] && allowed=']A-Za-z0-9.:_~[ -'
    substitute "$name" "$value" "$allowed" "host/port/duration characters"
done

number() { # NAME VALUE [WHAT]
    case "$2" in
        "" | *[!0-9]*) die "TRANZIT_NGINX_$1: expected ${3:-a number}, found '$2'" ;;
    esac
}

# The names a certificate can carry: DNS names and IPv4 addresses; not "~."
# (any name), "*.x", ".example.com" (a domain and its subdomains) or "[::1]".
certificate_names() {
    for host in $TRANZIT_NGINX_SERVER_NAMES; do
        case "$host" in
            "~"* | .* | *"*"* | *"["* | *:*) ;;
            *) echo "$host" ;;
        esac
    done
}

fingerprint() {
    openssl x509 -noout -fingerprint -sha256 -in "$1" | sed 's/.*=//'
}

# A self-signed certificate is kept while it is valid for 30 more days and
# names every server name.
self_signed_is_current() { # CERT KEY
    [ -r "$1" ] && [ -r "$2" ] || return 1
    openssl x509 -noout -checkend "$renew_before" -in "$1" >/dev/null 2>&1 || return 1
    # "X509v3 Subject Alternative Name: DNS:a, IP Address:127.0.0.1" → ...:DNS:a,IPAddress:127.0.0.1,
    have="$(openssl x509 -noout -ext subjectAltName -in "$1" 2>/dev/null | tr -d ' \n'),"
    for host in $(certificate_names) localhost 127.0.0.1; do
        case "$have" in
            *":$host,"*) ;;
            *) return 1 ;;
        esac
    done
}

# EC P-256 for a year, for every server name and the local addresses.
ensure_self_signed() { # CERT KEY
    self_signed_is_current "$1" "$2" && return 0
    dir=$(dirname "$1")
    { mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; } ||
        die "TRANZIT_NGINX_TLS=$mode: cannot write the self-signed certificate to $dir: mount a volume at /var/lib/tranzit-nginx (compose: the volume \"tls\")"
    cn=""
    san=""
    for host in $(certificate_names); do
        [ -n "$cn" ] || cn=$host
        case "$host" in
            localhost | 127.0.0.1) ;;
            *[!0-9.]*) san="${san}DNS:$host," ;;
            *) san="${san}IP:$host," ;;
        esac
    done
    printf '%s\n' "[req]" "prompt = no" "distinguished_name = dn" "x509_extensions = ext" \
        "[dn]" "CN = ${cn:-localhost}" \
        "[ext]" "subjectAltName = ${san}DNS:localhost,IP:127.0.0.1,IP:::1" \
        "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
        "extendedKeyUsage = serverAuth" >"$work/self-signed.cnf"
    (umask 077 && openssl req -x509 -config "$work/self-signed.cnf" -newkey ec \
        -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 365 \
        -keyout "$2.new" -out "$1.new") >"$work/openssl.log" 2>&1 ||
        die "openssl could not make the self-signed certificate: $(tail -n 1 "$work/openssl.log")"
    chmod 0644 "$1.new"
    mv "$2.new" "$2"
    mv "$1.new" "$1"
    say "self-signed certificate for ${cn:-localhost} made: $1 (SHA-256 $(fingerprint "$1"))"
}

require_readable() { # FILE WHAT FIX
    [ -e "$1" ] || die "TRANZIT_NGINX_TLS=$mode: the $2 $1 is missing (or its folder is closed to uid $(id -u)): put it there, $3"
    [ -r "$1" ] || die "TRANZIT_NGINX_TLS=$mode: uid $(id -u) cannot read the $2 $1: $3"
}

# Sets cert and key: what nginx serves in this mode, now.
choose_certificate() {
    cert=$wanted_cert
    key=$wanted_key
    if [ "$mode" = self-signed ]; then
        ensure_self_signed "$cert" "$key"
    elif [ "$mode" = letsencrypt ] && ! { [ -e "$cert" ] && [ -e "$key" ]; }; then
        # nginx has to run to serve certbot's challenge for the first certificate.
        say "no Let's Encrypt certificate at $cert yet: serving a self-signed one until certbot has it"
        cert=$self_signed_dir/fullchain.pem
        key=$self_signed_dir/privkey.pem
        ensure_self_signed "$cert" "$key"
    fi
    require_readable "$cert" certificate "chmod 0644"
    require_readable "$key" key "chgrp 10101 and chmod 0640"
}

# The placeholders of tls/*.conf.template.
tls_values() {
    path='A-Za-z0-9._/-'
    substitute TLS_CERT "$cert" "$path" "a path of letters, digits and ._-/"
    substitute TLS_KEY "$key" "$path" "a path of letters, digits and ._-/"
    number HTTPS_PORT "$TRANZIT_NGINX_HTTPS_PORT" "a port"
    substitute HTTPS_PORT "$TRANZIT_NGINX_HTTPS_PORT" 0-9 "a port"
    # compose's publish spec (127.0.0.1:8443) works too; 443 goes without.
    url_port=${TRANZIT_NGINX_HTTPS_REDIRECT_PORT##*:}
    number HTTPS_REDIRECT_PORT "$url_port" "a port (8443, or 127.0.0.1:8443)"
    if [ "$url_port" = 443 ]; then url_port=""; else url_port=":$url_port"; fi
    substitute HTTPS_URL_PORT "$url_port" :0-9 "a port"
    number HSTS_MAX_AGE "$TRANZIT_NGINX_HSTS_MAX_AGE" "seconds (0: no header)"
    hsts="max-age=$TRANZIT_NGINX_HSTS_MAX_AGE"
    [ "$TRANZIT_NGINX_HSTS_MAX_AGE" != 0 ] || hsts=""
    substitute HSTS "$hsts" a-z0-9=- "max-age=N"
    stapling=off
    [ -z "$(openssl x509 -noout -ocsp_uri -in "$cert" 2>/dev/null)" ] || stapling=on
    substitute OCSP_STAPLING "$stapling" a-z "on or off"
}

# nginx before 1.25.1 knows HTTP/2 only as a `listen` parameter, newer ones
# warn about that parameter: the templates say `http2 on;`, older nginx gets
# `listen ... ssl http2;`.
nginx_version() { # 1.22.1 → 12201
    nginx -v 2>&1 | awk -F '[/.]' '/version/ { print $2 * 10000 + $3 * 100 + $4 }'
}

render() { # TEMPLATE OUTPUT
    sed -e "$script" "$1" >"$2"
    left=$(grep -o '\${TRANZIT_NGINX_[A-Z_]*}' "$2" | head -n 1)
    [ -z "$left" ] || die "$1: no value for $left"
}

# Render into a folder of its own, have nginx check it, and only then move it
# into place: a broken config never replaces the running one.
install_config() {
    parts=off
    [ "$mode" = off ] || parts=tls
    render "$etc/nginx.conf.template" "$work/nginx.conf"
    for part in tls listen hsts; do
        render "$etc/$parts/$part.conf.template" "$work/$part.conf"
    done
    if ! nginx -e stderr -q -t -c "$work/nginx.conf" >"$work/test.log" 2>&1; then
        error=$(sed -n '/\[emerg\]/ { s/^nginx: //; p; q; }' "$work/test.log")
        die "nginx -t: ${error:-$(head -n 1 "$work/test.log")}"
    fi
    mv "$work"/*.conf "$conf_dir"/
}

# What the watcher compares: the certificate files' contents (read through
# certbot's symlinks) or their absence, and whether a self-signed one is due.
certificate_state() {
    for file in "$wanted_cert" "$wanted_key"; do
        # Never fails (set -e would end the watcher): a file replaced meanwhile
        # reads as "unreadable" and is looked at again on the next check.
        if [ -r "$file" ]; then cksum <"$file" 2>/dev/null || echo "unreadable $file"; else echo "no $file"; fi
    done
    if [ "$mode" = self-signed ]; then
        openssl x509 -noout -checkend "$renew_before" -in "$wanted_cert" >/dev/null 2>&1 || echo due
    fi
}

# A child of nginx (PID 1) after the exec below; it ends with the container.
watch_certificate() {
    last=$(certificate_state)
    while sleep "$TRANZIT_NGINX_TLS_CHECK" && kill -0 "$$" 2>/dev/null; do
        now=$(certificate_state)
        [ "$now" != "$last" ] || continue
        last=$now
        say "certificate changed, reloading"
        "$0" reload || true # it said why
    done
}

if [ "$mode" != off ]; then
    case "$mode" in
        self-signed) cert_dir=$self_signed_dir ;;
        files) cert_dir=$etc/certs ;;
        letsencrypt)
            # certbot's certificate name: the first DNS name of the server names.
            domain=${TRANZIT_NGINX_TLS_DOMAIN:-$(certificate_names | grep -v '^[0-9.]*$' | head -n 1)}
            case "$domain" in
                "" | *[!A-Za-z0-9.-]*)
                    die "TRANZIT_NGINX_TLS_DOMAIN: expected the certificate's DNS name (default: the first DNS name of TRANZIT_NGINX_SERVER_NAMES), found '$domain'"
                    ;;
            esac
            cert_dir=/etc/letsencrypt/live/$domain
            # Its HTTP-01 challenge asks for that name: one nginx does not serve
            # is closed unanswered, and certbot fails every time.
            served=""
            for host in $TRANZIT_NGINX_SERVER_NAMES; do
                case "$host" in
                    "$domain" | "~." | ".${domain#*.}" | ".$domain") served=1 ;;
                esac
            done
            [ -n "$served" ] || [ "${1:-}" = reload ] ||
                say "warning: $domain is not one of ALLOWED_HOSTS ($TRANZIT_NGINX_SERVER_NAMES): Let's Encrypt's challenge for it will be refused; add it"
            ;;
    esac
    wanted_cert=${TRANZIT_NGINX_TLS_CERT:-$cert_dir/fullchain.pem}
    wanted_key=${TRANZIT_NGINX_TLS_KEY:-$cert_dir/privkey.pem}
    number TLS_CHECK "$TRANZIT_NGINX_TLS_CHECK" "seconds between certificate checks"
    [ "$TRANZIT_NGINX_TLS_CHECK" -ge 1 ] ||
        die "TRANZIT_NGINX_TLS_CHECK: expected at least 1 second between certificate checks, found '$TRANZIT_NGINX_TLS_CHECK'"
    choose_certificate
    tls_values
    if [ "$(nginx_version)" -lt 12501 ]; then
        script="${script}s/^\([[:space:]]*listen .* ssl\)/\1 http2/;/^[[:space:]]*http2 on;/d;"
    fi
fi
install_config
rm -rf "$work"
trap - EXIT

if [ "${1:-}" = reload ]; then
    nginx -e stderr -c "$conf_dir/nginx.conf" -s reload
    say "reloaded${cert:+: serving $cert (SHA-256 $(fingerprint "$cert"))}"
    exit 0
fi
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
if [ "$mode" != off ]; then
    say "HTTPS on port $TRANZIT_NGINX_HTTPS_PORT: serving $cert (SHA-256 $(fingerprint "$cert"))"
    watch_certificate &
fi
exec nginx -e stderr -c "$conf_dir/nginx.conf" -g "daemon off;"
