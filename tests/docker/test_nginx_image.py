"""tranzit's nginx image on its own: each TRANZIT_NGINX_TLS mode, HTTP/2, TLS versions,
HSTS, and certificate reloads that keep open websockets.

Each test starts the image as compose does (read-only, no capabilities) in front of a
tiny aiohttp upstream on a network of its own; a real client checks what it is served.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import http.server
import ipaddress
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from dockerstack import DockerEnv, docker_gateway, run
from support import tls_session

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

#: The upstream: the headers nginx forwards, at any path, and a websocket echo at /ws.
UPSTREAM = """
from aiohttp import web
async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str(message.data)
    return ws
async def seen(request):
    return web.json_response({"proto": request.headers.get("X-Forwarded-Proto")})
app = web.Application()
app.add_routes([web.get("/ws", echo), web.get("/{path:.*}", seen)])
web.run_app(app, port=8000, print=None)
"""
NAMES = "localhost,127.0.0.1,app.test"
CERTS = "/etc/tranzit-nginx/certs"


@dataclass
class Nginx:
    container: str

    def port(self, inside: int) -> int:
        out = run(["docker", "port", self.container, f"{inside}/tcp"], timeout=30).stdout
        return int(out.split()[0].rsplit(":", 1)[1])

    @property
    def http(self) -> int:
        return self.port(8080)

    @property
    def https(self) -> int:
        return self.port(8443)

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", self.container, *argv], capture_output=True, text=True, timeout=60
        )

    def logs(self) -> str:
        return run(["docker", "logs", self.container], timeout=30).stderr

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.exec("tranzit-nginx-health").returncode != 0:
            assert time.monotonic() < deadline, f"nginx did not come up:\n{self.logs()}"
            time.sleep(0.3)


@pytest.fixture(scope="module")
def network(tranzit_images: DockerEnv) -> Iterator[str]:
    """A network with the upstream on it, reachable as ``up:8000``."""
    name = f"tz-nginx-{uuid.uuid4().hex[:8]}"
    run(["docker", "network", "create", name], timeout=60)
    upstream = f"{name}-up"
    try:
        run(
            ["docker", "run", "-d", "--name", upstream, "--network", name, "--network-alias",
             "up", "--entrypoint", "python", tranzit_images.runtime_image, "-c", UPSTREAM],
            timeout=60,
        )  # fmt: skip
        probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/')"
        deadline = time.monotonic() + 30
        while subprocess.run(
            ["docker", "exec", upstream, "python", "-c", probe], capture_output=True, timeout=30
        ).returncode:
            assert time.monotonic() < deadline, "the upstream did not come up"
            time.sleep(0.3)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", upstream], capture_output=True, timeout=60)
        subprocess.run(["docker", "network", "rm", name], capture_output=True, timeout=60)


def nginx_args(image: str, network: str, env: dict[str, str], mounts: list[str]) -> list[str]:
    """``docker run`` as compose runs the service."""
    settings = {"TRANZIT_NGINX_WEB": "up:8000", "TRANZIT_NGINX_WS": "up:8000", **env}
    return [
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--network", network,
        *(f"--env={key}={value}" for key, value in settings.items()),
        *(f"--mount={mount}" for mount in mounts),
        image,
    ]  # fmt: skip


@pytest.fixture
def start_nginx(tranzit_images: DockerEnv, network: str) -> Iterator[Callable[..., Nginx]]:
    started: list[str] = []

    def start(env: dict[str, str], *mounts: str) -> Nginx:
        name = f"{network}-{len(started)}"
        started.append(name)
        args = nginx_args(tranzit_images.nginx_image, network, env, list(mounts))
        run(["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::8080",
             "-p", "127.0.0.1::8443", *args], timeout=60)  # fmt: skip
        nginx = Nginx(name)
        nginx.wait_ready()
        return nginx

    yield start
    for name in started:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def any_certificate() -> ssl.SSLContext:
    """A client that accepts the self-signed certificate (``curl -k``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served_certificate(port: int, sni: str | None = None) -> bytes:
    """The DER certificate nginx presents on ``port`` (no SNI unless ``sni``)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        any_certificate().wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def handshake(port: int, version: ssl.TLSVersion) -> str:
    """The version agreed on, or why the handshake failed."""
    context = any_certificate()
    with warnings.catch_warnings():  # Python deprecates the very versions we offer
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    # Our OpenSSL would refuse TLS 1.0/1.1 itself at its default security level.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            return str(tls.version())
    except ssl.SSLError as exc:
        return f"refused: {exc.reason}"


def write_certificate(directory: Path, *, key_only: bool = False) -> str:
    """A new key and certificate for localhost; the certificate's SHA-256 fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder(name, name, key.public_key(), x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Readable by nginx's uid 10101 (a real key: chgrp 10101, chmod 0640).
    (directory / "privkey.pem").write_bytes(pem)
    (directory / "privkey.pem").chmod(0o644)
    if not key_only:
        (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "fullchain.pem").chmod(0o644)
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def certs_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)  # the umask may have taken some
    return directory


async def echoes(ws: aiohttp.ClientWebSocketResponse, text: str) -> bool:
    await ws.send_str(text)
    return await asyncio.wait_for(ws.receive_str(), 5) == text


@pytest.fixture
def volume() -> Iterator[str]:
    """A named volume, removed after the containers (ask for it before ``start_nginx``)."""
    name = f"tz-nginx-tls-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["docker", "volume", "rm", name], capture_output=True, timeout=60)


async def test_self_signed_https_http2_hsts_and_wss(
    volume: str, start_nginx: Callable[..., Nginx]
) -> None:
    env = {
        "TRANZIT_NGINX_TLS": "self-signed",
        "TRANZIT_NGINX_SERVER_NAMES": NAMES,
        "TRANZIT_NGINX_HTTPS_REDIRECT_PORT": "127.0.0.1:9443",  # compose's publish spec
    }
    nginx = start_nginx(env, f"type=volume,source={volume},target=/var/lib/tranzit-nginx")
    first = served_certificate(nginx.https)  # no SNI, as for https://127.0.0.1/
    names = x509.load_der_x509_certificate(first).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert {"localhost", "app.test"} <= set(names.value.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in names.value.get_values_for_type(x509.IPAddress)
    key = nginx.exec("stat", "-c", "%a %u", "/var/lib/tranzit-nginx/self-signed/privkey.pem")
    assert key.stdout.split() == ["600", "10101"]

    async with tls_session() as session:
        plain = f"http://127.0.0.1:{nginx.http}"
        async with session.get(f"{plain}/nginx-health") as health:
            assert (health.status, await health.text()) == (200, "ok\n")
        async with session.post(
            f"{plain}/a/b?c=1", headers={"Host": "app.test"}, allow_redirects=False
        ) as moved:
            assert moved.status == 308
            assert moved.headers["Location"] == "https://app.test:9443/a/b?c=1"

        secure = f"https://127.0.0.1:{nginx.https}"
        tls = {"ssl": any_certificate(), "server_hostname": "app.test"}
        async with session.get(f"{secure}/x", headers={"Host": "app.test"}, **tls) as page:
            assert (await page.json()) == {"proto": "https"}
            assert page.headers["Strict-Transport-Security"] == "max-age=63072000"
        async with session.get(f"{secure}/x", ssl=any_certificate()) as local:
            assert local.status == 200 and "Strict-Transport-Security" not in local.headers
        with pytest.raises(aiohttp.ServerDisconnectedError):  # 444 for an unknown Host
            await session.get(f"{secure}/", headers={"Host": "evil.test"}, **tls)
        async with session.ws_connect(
            f"wss://127.0.0.1:{nginx.https}/ws", headers={"Host": "app.test"}, **tls
        ) as ws:
            assert await echoes(ws, "over wss")

    curl = ["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}"]
    assert run([*curl, f"{secure}/nginx-health"], timeout=30).stdout == "2"
    assert handshake(nginx.https, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert handshake(nginx.https, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        # The server's alert, not our own refusal to offer the version.
        assert handshake(nginx.https, old) == "refused: TLSV1_ALERT_PROTOCOL_VERSION"

    run(["docker", "restart", nginx.container], timeout=60)
    nginx.wait_ready()
    assert served_certificate(nginx.https) == first
    assert nginx.logs().count("self-signed certificate for localhost made") == 1


@pytest.mark.parametrize("trigger", ["exec", "watcher"])
async def test_new_certificate_is_served_and_open_websockets_stay(
    trigger: str, start_nginx: Callable[..., Nginx], tmp_path: Path
) -> None:
    certs = certs_dir(tmp_path)
    first = write_certificate(certs)
    check = "1" if trigger == "watcher" else "3600"
    nginx = start_nginx(
        {"TRANZIT_NGINX_TLS": "files", "TRANZIT_NGINX_TLS_CHECK": check},
        f"type=bind,source={certs},target={CERTS},readonly",
    )
    assert fingerprint(served_certificate(nginx.https)) == first
    async with (
        tls_session() as session,
        session.ws_connect(f"wss://127.0.0.1:{nginx.https}/ws", ssl=any_certificate()) as ws,
    ):
        assert await echoes(ws, "before")
        if trigger == "exec":
            write_certificate(certs, key_only=True)  # a key that does not fit
            refused = nginx.exec("tranzit-nginx", "reload")
            assert refused.returncode == 2
            assert "reload failed, nginx keeps its running config: nginx -t" in refused.stderr
            assert fingerprint(served_certificate(nginx.https)) == first
        second = write_certificate(certs)
        if trigger == "exec":
            reloaded = nginx.exec("tranzit-nginx", "reload")
            assert reloaded.returncode == 0, reloaded.stderr
        deadline = time.monotonic() + 15
        while fingerprint(served_certificate(nginx.https)) != second:
            assert time.monotonic() < deadline, f"still the old certificate:\n{nginx.logs()}"
            await asyncio.sleep(0.3)
        assert await echoes(ws, "after the reload")
    if trigger == "watcher":
        assert "certificate changed, reloading" in nginx.logs()


@pytest.mark.parametrize("fault", ["missing", "unreadable", "mismatch"])
def test_files_mode_refuses_to_start_without_a_usable_key(
    fault: str, tranzit_images: DockerEnv, network: str, tmp_path: Path
) -> None:
    certs = certs_dir(tmp_path)
    write_certificate(certs)
    key = certs / "privkey.pem"
    if fault == "missing":
        key.unlink()
    elif fault == "unreadable":
        key.chmod(0o600)  # ours, not uid 10101's
    else:
        write_certificate(certs, key_only=True)
    mount = f"type=bind,source={certs},target={CERTS},readonly"
    args = nginx_args(tranzit_images.nginx_image, network, {"TRANZIT_NGINX_TLS": "files"}, [mount])
    proc = subprocess.run(
        ["docker", "run", "--rm", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    if fault == "mismatch":
        assert line.startswith("tranzit-nginx: nginx -t: ") and "mismatch" in line, line
    else:
        assert f"{CERTS}/privkey.pem" in line and "chmod 0640" in line, line


async def test_off_serves_plain_http_only(start_nginx: Callable[..., Nginx]) -> None:
    nginx = start_nginx({"TRANZIT_NGINX_SERVER_NAMES": NAMES})  # the image's default: off
    async with tls_session() as session:
        base = f"http://127.0.0.1:{nginx.http}"
        async with session.get(f"{base}/x", headers={"Host": "app.test"}) as page:
            assert (await page.json()) == {"proto": "http"}
            assert "Strict-Transport-Security" not in page.headers
        async with session.ws_connect(f"{base}/ws") as ws:
            assert await echoes(ws, "over ws")
    # Listening sockets (state 0A) in the container: the HTTP port only.
    table = nginx.exec("cat", "/proc/net/tcp").stdout.splitlines()[1:]
    listening = {int(row.split()[1].split(":")[1], 16) for row in table if row.split()[3] == "0A"}
    assert 8080 in listening and 8443 not in listening, listening


def ca_certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    signer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    """A CA certificate for ``key``: self-signed, or signed by ``signer`` (name, key)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer, signing_key = signer or (name, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder(issuer, name, key.public_key(), x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signing_key, hashes.SHA256())
    )


@dataclass
class CertificateAuthority:
    """A root and its intermediate, as a public CA has them: the intermediate signs
    a localhost certificate and answers OCSP for it (the responder is the issuer)."""

    root: x509.Certificate
    key: ec.EllipticCurvePrivateKey  # the intermediate's
    cert: x509.Certificate  # the intermediate

    @classmethod
    def make(cls) -> CertificateAuthority:
        root_key, key = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
        root = ca_certificate("tranzit test root", root_key, None)
        return cls(root, key, ca_certificate("tranzit test CA", key, (root.subject, root_key)))

    def issue(self, directory: Path, ocsp_url: str) -> x509.Certificate:
        """fullchain.pem and privkey.pem for localhost, naming ``ocsp_url`` as responder."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        ocsp = x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        cert = (
            x509.CertificateBuilder(
                self.cert.subject, name, key.public_key(), x509.random_serial_number()
            )
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.AuthorityInformationAccess([ocsp]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (directory / "privkey.pem").write_bytes(pem)
        # The certificate, then the intermediate: what a CA hands out as fullchain.
        chain = [c.public_bytes(serialization.Encoding.PEM) for c in (cert, self.cert)]
        (directory / "fullchain.pem").write_bytes(b"".join(chain))
        for file in ("privkey.pem", "fullchain.pem"):
            (directory / file).chmod(0o644)
        return cert

    def answer(self, request_der: bytes, leaf: x509.Certificate) -> bytes:
        """A signed "good" response for ``leaf`` (``cryptography``'s OCSP builder)."""
        request = ocsp.load_der_ocsp_request(request_der)
        assert request.serial_number == leaf.serial_number, "asked about another certificate"
        now = datetime.datetime.now(datetime.timezone.utc)
        response = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=leaf,
                issuer=self.cert,
                algorithm=request.hash_algorithm,
                cert_status=ocsp.OCSPCertStatus.GOOD,
                this_update=now - datetime.timedelta(minutes=1),
                next_update=now + datetime.timedelta(hours=12),
                revocation_time=None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.cert)
            .sign(self.key, hashes.SHA256())
        )
        return response.public_bytes(serialization.Encoding.DER)


@contextlib.contextmanager
def ocsp_responder(
    ca: CertificateAuthority, leaf: Callable[[], x509.Certificate], asked: list[str]
) -> Iterator[str]:
    """An OCSP responder on the docker gateway (containers reach it, nothing else); its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # RFC 6960 A.1: base64 of the DER request in the path
            self.reply(base64.b64decode(urllib.parse.unquote(self.path.lstrip("/"))))

        def do_POST(self) -> None:
            self.reply(self.rfile.read(int(self.headers["Content-Length"])))

        def reply(self, request: bytes) -> None:
            asked.append(self.command)
            body = ca.answer(request, leaf())
            self.send_response(200)
            self.send_header("Content-Type", "application/ocsp-response")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((docker_gateway(), 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def stapled_status(port: int) -> str:
    """The stapled response's certificate status (`openssl s_client -status`), or what
    openssl printed instead ("OCSP response: no response sent")."""
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-status"],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    status = re.search(r"^\s*Cert Status: (\w+)$", proc.stdout, re.M)
    if status:
        return status.group(1)
    said = re.search(r"^OCSP response: .*$", proc.stdout, re.M)
    return said.group(0) if said else proc.stdout[-2000:]


def test_ocsp_stapled_when_the_certificate_names_a_responder(
    start_nginx: Callable[..., Nginx], tmp_path: Path
) -> None:
    """A certificate with an OCSP URL (a CA's; Let's Encrypt's have none since 2025),
    issued by an intermediate that fullchain.pem carries: nginx asks the responder,
    checks the answer (ssl_stapling_verify) and staples it."""
    ca = CertificateAuthority.make()
    certs = certs_dir(tmp_path)
    asked: list[str] = []
    issued: list[x509.Certificate] = []
    with ocsp_responder(ca, lambda: issued[-1], asked) as url:
        issued.append(ca.issue(certs, url))
        nginx = start_nginx(
            {"TRANZIT_NGINX_TLS": "files"},
            f"type=bind,source={certs},target={CERTS},readonly",
        )
        # nginx fetches the response on the first handshakes and staples it from then on.
        deadline = time.monotonic() + 20
        while (status := stapled_status(nginx.https)) != "good":
            assert time.monotonic() < deadline, f"{status}\nasked: {asked}\n{nginx.logs()}"
            time.sleep(0.5)
    assert asked, "nginx never asked the responder"
    assert "OCSP" not in nginx.logs(), nginx.logs()  # no stapling errors


@pytest.mark.parametrize(
    ("names", "warned"), [("localhost,app.test", False), (".test", False), ("localhost", True)]
)
def test_letsencrypt_warns_when_the_domain_is_not_served(
    names: str, warned: bool, volume: str, start_nginx: Callable[..., Nginx]
) -> None:
    """The challenge for a name nginx does not serve is closed unanswered: say so at start."""
    env = {
        "TRANZIT_NGINX_TLS": "letsencrypt",
        "TRANZIT_NGINX_TLS_DOMAIN": "app.test",
        "TRANZIT_NGINX_SERVER_NAMES": names,
    }
    nginx = start_nginx(env, f"type=volume,source={volume},target=/var/lib/tranzit-nginx")
    logs = nginx.logs()
    assert "serving a self-signed one until certbot has it" in logs, logs
    warning = "warning: app.test is not one of ALLOWED_HOSTS"
    assert (warning in logs) is warned, logs


def test_a_zero_certificate_check_interval_is_refused(
    tranzit_images: DockerEnv, network: str, tmp_path: Path
) -> None:
    certs = certs_dir(tmp_path)
    write_certificate(certs)
    mount = f"type=bind,source={certs},target={CERTS},readonly"
    env = {"TRANZIT_NGINX_TLS": "files", "TRANZIT_NGINX_TLS_CHECK": "0"}
    args = nginx_args(tranzit_images.nginx_image, network, env, [mount])
    proc = subprocess.run(
        ["docker", "run", "--rm", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("tranzit-nginx: TRANZIT_NGINX_TLS_CHECK: expected at least 1"), line
