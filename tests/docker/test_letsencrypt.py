"""TRANZIT_TLS=letsencrypt end to end, against a real ACME server on this machine.

Pebble (Let's Encrypt's test ACME server, Debian's ``pebble``) stands in for
Let's Encrypt, and its ``pebble-challtestsrv`` for DNS: every name resolves to
127.0.0.1, where the stack's nginx publishes its HTTP port, which is the port
pebble's validator asks. The generated project runs exactly as a user's would
(``COMPOSE_PROFILES=letsencrypt``, ``CERTBOT_SERVER`` and ``CERTBOT_CA_BUNDLE``
pointing at pebble); the only test file on top lets the certbot container reach
pebble (``extra_hosts``) and trust its TLS listener, and shortens nginx's
certificate check to 2 s.

What a user would notice: nginx answers at once with a stand-in certificate,
certbot's first certificate is served without anyone doing anything, and a
renewal (``certbot renew --force-renewal``, the deploy hook) reaches new
connections while an open websocket stays open.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from dockerstack import (
    IN_CI,
    SESSION_COOKIE,
    TEMPLATE,
    DockerEnv,
    Stack,
    docker_gateway,
    record,
    run,
    tracked,
)
from support import free_port
from websockets.sync.client import connect

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

DOMAIN = "app.test"
PEBBLE_NAME = "pebble.test"  # how the certbot container reaches pebble (extra_hosts)


@dataclass
class Pebble:
    directory_url: str  # as the certbot container sees it
    ca_bundle: Path  # the certificate of pebble's own HTTPS listener
    management: str  # https://127.0.0.1:PORT, for the issuing root

    def issuing_root(self) -> str:
        """The root pebble signs with (made anew on every start)."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context) as response:
            return str(response.read().decode())


def start(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="module")
def http_port() -> int:
    """The stack's published HTTP port, which is also the one pebble validates on."""
    return free_port()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory, http_port: int) -> Iterator[Pebble]:
    binaries = [shutil.which(name) for name in ("pebble", "pebble-challtestsrv")]
    if not all(binaries):
        message = "no pebble (Debian: apt install pebble)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("pebble")
    gateway = docker_gateway()
    key, cert = work / "key.pem", work / "cert.pem"
    run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={PEBBLE_NAME}", "-keyout", str(key),
         "-out", str(cert), "-addext", f"subjectAltName=DNS:{PEBBLE_NAME},IP:127.0.0.1"],
        timeout=60,
    )  # fmt: skip
    cert.chmod(0o644)
    acme_port, management_port, dns_port = free_port(), free_port(), free_port()
    config = work / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    # Only where the containers reach the host, and the loopback.
                    "listenAddress": f"{gateway}:{acme_port}",
                    "managementListenAddress": f"127.0.0.1:{management_port}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    # Every A query answers 127.0.0.1; no AAAA answers (nginx publishes on IPv4).
    dns = start(
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
         "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
         "-management", f"127.0.0.1:{free_port()}"],
        work / "challtestsrv.log",
    )  # fmt: skip
    # No random sleeps before validating, no randomly refused nonces.
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PATH": "/usr/bin:/bin"}
    server = start(
        ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
        work / "pebble.log",
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", management_port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (work / "pebble.log").read_text()
                assert time.monotonic() < deadline, "pebble did not start"
                time.sleep(0.2)
        yield Pebble(
            directory_url=f"https://{PEBBLE_NAME}:{acme_port}/dir",
            ca_bundle=cert,
            management=f"https://127.0.0.1:{management_port}",
        )
    finally:
        for process in (server, dns):
            process.terminate()
            process.wait(timeout=30)


@dataclass
class LetsEncryptStack:
    stack: Stack
    https_port: int
    pebble: Pebble

    def served(self) -> x509.Certificate:
        """The certificate a client asking for DOMAIN is shown."""
        context = ssl._create_unverified_context()
        with (
            socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def wait_for(
        self, wanted: str, changed: Callable[[x509.Certificate], bool], timeout: float = 120
    ) -> x509.Certificate:
        """Wait until ``changed(served())`` holds; the certificate then served."""
        deadline = time.monotonic() + timeout
        while True:
            cert = self.served()
            if changed(cert):
                return cert
            if time.monotonic() > deadline:
                logs = self.stack.compose("logs", "--no-color", "--tail", "60", "certbot", "nginx")
                raise AssertionError(f"{wanted} after {timeout:.0f} s:\n{logs.stdout}")
            time.sleep(1)

    def curl(self, cafile: Path, path: str, *args: str) -> str:
        """curl's output for https://DOMAIN:PORT``path``, trusting only ``cafile``."""
        resolve = f"{DOMAIN}:{self.https_port}:127.0.0.1"
        url = f"https://{DOMAIN}:{self.https_port}{path}"
        return run(["curl", "-sS", "--cacert", str(cafile), "--resolve", resolve, *args, url],
                   timeout=30).stdout  # fmt: skip

    def root(self) -> Path:
        """pebble's issuing root, in a file (what a client trusting only it uses)."""
        path = self.stack.root / "pebble-root.pem"
        path.write_text(self.pebble.issuing_root())
        return path


@pytest.fixture(scope="module")
def le_stack(
    tranzit_images: DockerEnv,
    tmp_path_factory: pytest.TempPathFactory,
    pebble: Pebble,
    http_port: int,
) -> Iterator[LetsEncryptStack]:
    from cookiecutter.main import cookiecutter

    out = tmp_path_factory.mktemp("letsencrypt")
    root = Path(
        cookiecutter(
            str(TEMPLATE), no_input=True, output_dir=str(out), extra_context={"https": "yes"}
        )
    )
    # The test's part: reach pebble, trust its listener, check certificates every 2 s.
    (root / "compose.pebble.yaml").write_text(
        "services:\n"
        "  certbot:\n"
        f'    extra_hosts: ["{PEBBLE_NAME}:host-gateway"]\n'
        "    volumes:\n"
        f"      - {{type: bind, source: {pebble.ca_bundle}, target: /etc/pebble.pem, "
        "read_only: true}\n"
        "  nginx:\n"
        "    environment:\n"
        '      TRANZIT_NGINX_TLS_CHECK: "2"\n'
    )
    name = f"tzle{uuid.uuid4().hex[:8]}"
    https_port = free_port()
    env = {
        **tranzit_images.env,
        "COMPOSE_FILE": "compose.yaml:compose.override.yaml:compose.pebble.yaml",
        "IMAGE_NAME": f"tranzit-test/{name}",
        "IMAGE_TAG": "t",
        "TRANZIT_PUBLISH_PORT": f"127.0.0.1:{http_port}",
        "TRANZIT_PUBLISH_HTTPS_PORT": f"127.0.0.1:{https_port}",
        # What docs/docker.md tells a user to put in .env, with pebble for Let's Encrypt.
        "TRANZIT_TLS": "letsencrypt",
        "TRANZIT_TLS_DOMAIN": DOMAIN,
        "TRANZIT_TLS_EMAIL": f"ops@{DOMAIN}",
        "COMPOSE_PROFILES": "letsencrypt",
        "ALLOWED_HOSTS": f"{DOMAIN},localhost,127.0.0.1",
        "CERTBOT_SERVER": pebble.directory_url,
        "CERTBOT_CA_BUNDLE": "/etc/pebble.pem",
    }
    with tracked(Stack(root, name, tranzit_images.compose, env, http_port), images=True) as stack:
        stack.compose("build", timeout=900)
        started = time.monotonic()
        stack.compose("up", "-d", "--wait", "--wait-timeout", "180", "--pull", "never", timeout=300)
        record("letsencrypt: up -d --wait (nginx on its stand-in)", time.monotonic() - started)
        yield LetsEncryptStack(stack, https_port, pebble)


def issued_by_pebble(cert: x509.Certificate) -> bool:
    return "Pebble" in cert.issuer.rfc4514_string()


def test_certbot_gets_the_certificate_and_nginx_serves_it(le_stack: LetsEncryptStack) -> None:
    started = time.monotonic()
    cert = le_stack.wait_for("no certificate from the ACME server", issued_by_pebble)
    record("letsencrypt: up until the ACME certificate is served", time.monotonic() - started)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [DOMAIN]
    # Until then nginx answered with a stand-in, and said so.
    logs = le_stack.stack.compose("logs", "--no-color", "nginx").stdout
    assert "serving a self-signed one until certbot has it" in logs, logs
    # Verified by a client that trusts only pebble's root: chain and name hold.
    headers = le_stack.curl(le_stack.root(), "/", "--http2", "-D", "-", "-o", "/dev/null").lower()
    assert headers.startswith("http/2 200"), headers
    assert "strict-transport-security: max-age=63072000" in headers, headers
    # nginx reads the key as uid 10101 through certbot's deploy hook: 0640, group 10101.
    mode = le_stack.stack.compose(
        "exec", "-T", "certbot", "sh", "-c",
        f'stat -L -c "%a %g" /etc/letsencrypt/live/{DOMAIN}/privkey.pem',
    ).stdout.split()  # fmt: skip
    assert mode == ["640", "10101"], mode


def login_cookie(stack: LetsEncryptStack, root: Path) -> str:
    """A session cookie from POST /login over HTTPS."""
    headers = stack.curl(root, "/login", "-D", "-", "-o", "/dev/null", "--data", "name=renewal")
    line = next(h for h in headers.splitlines() if h.lower().startswith("set-cookie:"))
    cookie = line.split(":", 1)[1].strip().split(";", 1)[0]
    assert cookie.startswith(f"{SESSION_COOKIE}="), headers
    return cookie


def test_renewal_reaches_new_connections_and_keeps_open_websockets(
    le_stack: LetsEncryptStack,
) -> None:
    first = le_stack.wait_for("no certificate from the ACME server", issued_by_pebble)
    root = le_stack.root()
    context = ssl.create_default_context(cafile=str(root))
    cookie = login_cookie(le_stack, root)

    origin = f"https://{DOMAIN}:{le_stack.https_port}"
    sock = socket.create_connection(("127.0.0.1", le_stack.https_port), timeout=10)
    with connect(
        f"wss://{DOMAIN}:{le_stack.https_port}/ws",
        sock=sock,
        ssl=context,
        server_hostname=DOMAIN,
        origin=origin,  # type: ignore[arg-type]
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    ) as ws:
        ws.send("echo|before the renewal")
        assert ws.recv(timeout=10) == "echo|before the renewal"

        started = time.monotonic()
        # What the twice-daily loop does when the certificate is due, now.
        le_stack.stack.compose(
            "exec", "-T", "certbot", "certbot", "renew", "--force-renewal", "--non-interactive",
            # No TTY: certbot would otherwise wait up to 8 minutes first, as cron jobs do.
            "--no-random-sleep-on-renew",
            timeout=120,
        )  # fmt: skip
        renewed = le_stack.wait_for(
            "new connections still get the old certificate",
            lambda cert: issued_by_pebble(cert) and cert.serial_number != first.serial_number,
            timeout=60,
        )
        record("letsencrypt: renew until new connections see it", time.monotonic() - started)
        assert renewed.not_valid_before_utc >= first.not_valid_before_utc
        # The websocket opened before the renewal is still served.
        ws.send("echo|after the renewal")
        assert ws.recv(timeout=10) == "echo|after the renewal"
