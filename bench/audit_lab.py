"""The audit benchmark's lab: 100 TLS endpoints of known certificate classes, on loopback.

Each endpoint has its own DNS name (``ep001.bench.test`` …, published by a Knot DNS) and its own
loopback address (``127.0.10.1`` …: Linux routes all of 127.0.0.0/8 to ``lo``, so nothing on the
system is changed), as separate hosts would. The certificates come from the OCSP lab of the test
suite (``tests/fixtures/ocsp_lab.py``: a root, an issuing CA run with ``openssl ca``, an OCSP
responder answering from the CA's index, CRLs over HTTP); each endpoint gets a leaf of its own,
issued here with that CA, so that revocation is what a CA does: the index records it, the
responder answers from the index, ``openssl ca -gencrl`` writes the CRL.

Who serves what:

- 80 implicit-TLS (HTTPS) endpoints: one nginx, one ``server`` block per endpoint with its own
  address, port and certificate; stapling from a file where the class needs it;
- 10 IMAP STARTTLS endpoints: one Dovecot, one listener port on ten addresses, the certificate
  picked per local address (``local`` blocks);
- 10 SMTP STARTTLS endpoints: one Postfix instance, ten ``smtpd`` listeners in master.cf, each
  with its own ``smtpd_tls_chain_files``.

Nginx, Dovecot and Postfix run with their own configuration in a private folder, on free high
ports, and are stopped by their own process ids (Postfix by ``postfix stop`` of its instance).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from tests.fixtures.knot import KnotServer, running_knot
from tests.fixtures.net import wait_for_port
from tests.fixtures.ocsp_lab import MAX_REQUEST as MAX_OCSP_REQUEST
from tests.fixtures.ocsp_lab import OcspLab, running_ocsp_lab
from tests.fixtures.postfix_lab import MASTER_SERVICES

DOMAIN = "bench.test"
AUTOCONFIG_HOST = f"autoconfig.{DOMAIN}"
"""The site's autoconfig host: not published in the lab's DNS (see :func:`site_toml`)."""
NETWORK = "127.0.10."
"""Endpoint N listens on 127.0.10.N."""
NGINX = Path("/usr/sbin/nginx")
DOVECOT = Path("/usr/sbin/dovecot")
POSTFIX = Path("/usr/sbin/postfix")
AUTH_SOCKET = "auth-postfix"
"""Dovecot's SASL socket for Postfix, in Dovecot's folder: submission asks for a login."""

Kind = Literal[
    "good", "expired", "wrong-name", "weak-key", "revoked-ocsp", "revoked-crl", "stapled-revoked"
]
KINDS: tuple[Kind, ...] = (
    "good",
    "expired",
    "wrong-name",
    "weak-key",
    "revoked-ocsp",
    "revoked-crl",
    "stapled-revoked",
)
EXPECTED: dict[Kind, frozenset[str]] = {
    "good": frozenset(),
    "expired": frozenset({"TLS-EXPIRED"}),
    "wrong-name": frozenset({"TLS-NAME-MISMATCH"}),
    "weak-key": frozenset({"TLS-WEAK-KEY"}),
    "revoked-ocsp": frozenset({"TLS-REVOKED"}),
    "revoked-crl": frozenset({"TLS-REVOKED"}),
    "stapled-revoked": frozenset({"TLS-REVOKED"}),
}
"""The codes of warning, critical or unknown severity the audit must report, per class, and no
others (notes are not counted)."""

KIND_TEXT: dict[Kind, str] = {
    "good": "valid, trusted, right name; OCSP URL and CRL, or CRL only; some staple 'good'",
    "expired": "expired (one second after its issuing CA began)",
    "wrong-name": "valid, issued for another name",
    "weak-key": "RSA-1024 leaf key",
    "revoked-ocsp": "revoked after the CRL was issued: only the OCSP responder knows",
    "revoked-crl": "no OCSP URL; listed in the CRL",
    "stapled-revoked": "revoked; the server staples the responder's 'revoked' answer",
}

Server = Literal["nginx", "dovecot", "postfix"]
MIX: dict[Server, dict[Kind, int]] = {
    "nginx": {
        "good": 30,
        "expired": 8,
        "wrong-name": 8,
        "weak-key": 8,
        "revoked-ocsp": 8,
        "revoked-crl": 8,
        "stapled-revoked": 10,
    },
    # Postfix and Dovecot do not staple: no stapled class on the mail ports.
    "dovecot": {
        "good": 5,
        "expired": 1,
        "wrong-name": 1,
        "weak-key": 1,
        "revoked-ocsp": 1,
        "revoked-crl": 1,
    },
    "postfix": {
        "good": 5,
        "expired": 1,
        "wrong-name": 1,
        "weak-key": 1,
        "revoked-ocsp": 1,
        "revoked-crl": 1,
    },
}
PROTOCOL: dict[Server, tuple[Literal["https", "imap", "smtp"], Literal["implicit", "starttls"]]] = {
    "nginx": ("https", "implicit"),
    "dovecot": ("imap", "starttls"),
    "postfix": ("smtp", "starttls"),
}
WEAK_CIPHERS = "DEFAULT:@SECLEVEL=0"
"""OpenSSL refuses to load an RSA-1024 key at Debian's default security level (2)."""


@dataclass(frozen=True)
class LabEndpoint:
    index: int
    kind: Kind
    server: Server
    staple: Literal["none", "good", "revoked"] = "none"
    crl_only: bool = False
    """Issued without an OCSP URL (the CRL is the only revocation source)."""
    port: int = 0
    cert: Path = Path()
    """Leaf, then the intermediate."""
    key: Path = Path()
    staple_file: Path | None = None

    @property
    def name(self) -> str:
        return f"ep{self.index:03d}.{DOMAIN}"

    @property
    def address(self) -> str:
        return f"{NETWORK}{self.index}"

    @property
    def protocol(self) -> Literal["https", "imap", "smtp"]:
        return PROTOCOL[self.server][0]

    @property
    def tls(self) -> Literal["implicit", "starttls"]:
        return PROTOCOL[self.server][1]

    @property
    def label(self) -> str:
        """The audit's label for it: ``host:port (address)``."""
        return f"{self.name}:{self.port} ({self.address})"

    @property
    def expected(self) -> frozenset[str]:
        return EXPECTED[self.kind]

    @property
    def cert_name(self) -> str:
        """The DNS name in its certificate (another one for the wrong-name class)."""
        return f"other-ep{self.index:03d}.{DOMAIN}" if self.kind == "wrong-name" else self.name


def _spread(counts: dict[Kind, int]) -> list[Kind]:
    """The classes interleaved (good, expired, …, good, …) rather than in blocks."""
    left = dict(counts)
    order: list[Kind] = []
    while any(left.values()):
        for kind in KINDS:
            if left.get(kind, 0) > 0:
                order.append(kind)
                left[kind] -= 1
    return order


def plan() -> list[LabEndpoint]:
    """The 100 endpoints: 80 nginx (1–80), 10 Dovecot IMAP (81–90), 10 Postfix SMTP (91–100).

    Of the good ones, every fourth is issued without an OCSP URL (CRL only, as Let's Encrypt's
    since 2025) and every other good HTTPS one staples a 'good' response.
    """
    endpoints: list[LabEndpoint] = []
    goods = 0
    for server, counts in MIX.items():
        for kind in _spread(counts):
            index = len(endpoints) + 1
            staple: Literal["none", "good", "revoked"] = "none"
            crl_only = kind == "revoked-crl"
            if kind == "good":
                goods += 1
                crl_only = goods % 4 == 0
                staple = "good" if server == "nginx" and not crl_only and goods % 2 else "none"
            elif kind == "stapled-revoked":
                staple = "revoked"
            endpoints.append(LabEndpoint(index, kind, server, staple, crl_only))
    return endpoints


# ------------------------------------------------------------------------------ certificates


def _openssl(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        ["openssl", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()[-800:]}")


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%SZ")


def _issue(lab: OcspLab, endpoint: LabEndpoint, folder: Path) -> LabEndpoint:
    """A leaf for ``endpoint`` from the lab's issuing CA (``openssl ca``, so it is indexed)."""
    stem = folder / f"ep{endpoint.index:03d}"
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weak-key class
        if endpoint.kind == "weak-key"
        else ec.generate_private_key(ec.SECP256R1())
    )
    key_path = stem.with_suffix(".key")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mail Lab"),
                    x509.NameAttribute(NameOID.COMMON_NAME, endpoint.cert_name),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    csr_path = stem.with_suffix(".csr")
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    crt = stem.with_suffix(".crt")
    extra: list[str] = []
    if endpoint.kind == "expired":
        # Within the issuing CA's own validity, as in the field: the lab's CA was made minutes
        # ago, so the leaf ran out one second after the CA began. (A leaf that expired before
        # its issuer existed has no moment at which the chain was valid, which is a chain
        # problem besides the expiry.)
        start = lab.issuer().not_valid_before_utc
        extra = [
            "-startdate",
            _stamp(start),
            "-enddate",
            _stamp(start + datetime.timedelta(seconds=1)),
        ]
    _openssl(
        "ca",
        "-batch",
        "-notext",
        "-config",
        str(lab.folder / "inter" / "openssl.cnf"),
        "-extensions",
        "v3_leaf_crl_only" if endpoint.crl_only else "v3_leaf",
        "-in",
        str(csr_path),
        "-out",
        str(crt),
        *extra,
        env={"LAB_SAN": f"DNS:{endpoint.cert_name}"},
    )
    chain = stem.with_suffix(".chain.pem")
    chain.write_bytes(crt.read_bytes() + lab.intermediate.read_bytes())
    return replace(endpoint, cert=chain, key=key_path)


def _revoke(lab: OcspLab, endpoint: LabEndpoint) -> None:
    leaf = endpoint.cert.with_name(endpoint.cert.name.replace(".chain.pem", ".crt"))
    _openssl(
        "ca",
        "-config",
        str(lab.folder / "inter" / "openssl.cnf"),
        "-revoke",
        str(leaf),
        "-crl_reason",
        "keyCompromise",
        env={"LAB_SAN": f"DNS:unused.{DOMAIN}"},
    )


def _publish_crl(lab: OcspLab) -> None:
    pem = lab.folder / "inter" / "ca.crl.pem"
    _openssl(
        "ca",
        "-gencrl",
        "-config",
        str(lab.folder / "inter" / "openssl.cnf"),
        "-out",
        str(pem),
        env={"LAB_SAN": f"DNS:unused.{DOMAIN}"},
    )
    crl = x509.load_pem_x509_crl(pem.read_bytes())
    lab.crl.write_bytes(crl.public_bytes(serialization.Encoding.DER))


def _staple(lab: OcspLab, endpoint: LabEndpoint, folder: Path) -> LabEndpoint:
    """The responder's own answer for the leaf, as a server would have fetched it."""
    answer = sign_ahead(lab, _request(lab, endpoint))
    if not answer:
        raise RuntimeError(f"the OCSP responder made no staple for {endpoint.name}")
    status = ocsp.load_der_ocsp_response(answer).certificate_status
    want = ocsp.OCSPCertStatus.REVOKED if endpoint.staple == "revoked" else ocsp.OCSPCertStatus.GOOD
    if status != want:
        raise RuntimeError(f"the staple for {endpoint.name} says {status.name}, not {want.name}")
    path = folder / f"ep{endpoint.index:03d}.staple.der"
    path.write_bytes(answer)
    return replace(endpoint, staple_file=path)


def issue_all(lab: OcspLab, endpoints: Sequence[LabEndpoint], folder: Path) -> list[LabEndpoint]:
    """Every endpoint's leaf; revocations in the order that makes each class what it says.

    Revoked via CRL and stapled-revoked leaves are revoked before the CRL is written (so the CRL
    and the responder both know); revoked-via-OCSP leaves after it (only the responder knows,
    until the next CRL).
    """
    folder.mkdir(parents=True, exist_ok=True)
    issued = [_issue(lab, e, folder) for e in endpoints]
    ends = lab.issuer().not_valid_before_utc + datetime.timedelta(seconds=2)
    while datetime.datetime.now(datetime.UTC) < ends:  # the expired leaves really are expired
        time.sleep(0.1)
    for endpoint in issued:
        if endpoint.kind in ("revoked-crl", "stapled-revoked"):
            _revoke(lab, endpoint)
    _publish_crl(lab)
    for endpoint in issued:
        if endpoint.kind == "revoked-ocsp":
            _revoke(lab, endpoint)
    return [_staple(lab, e, folder) if e.staple != "none" else e for e in issued]


# ------------------------------------------------------------------------------ OCSP


def _request(lab: OcspLab, endpoint: LabEndpoint) -> bytes:
    leaf = x509.load_pem_x509_certificate(endpoint.cert.read_bytes())
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, lab.issuer(), hashes.SHA1())  # noqa: S303 (CertID, as servers do)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def sign_ahead(lab: OcspLab, request: bytes) -> bytes:
    """openssl's responder's answer to ``request``, valid for a day (the lab's own responder
    signs answers valid for an hour: too short for a long testssl.sh run); b"" if it failed."""
    with tempfile.TemporaryDirectory(dir=lab.folder) as temp:
        req, resp = Path(temp) / "req.der", Path(temp) / "resp.der"
        req.write_bytes(request)
        done = subprocess.run(
            [
                "openssl",
                "ocsp",
                "-index",
                str(lab.folder / "inter" / "index.txt"),
                "-CA",
                str(lab.intermediate),
                "-rsigner",
                str(lab.ocsp_signer),
                "-rkey",
                str(lab.ocsp_key),
                "-ndays",
                "1",
                "-reqin",
                str(req),
                "-respout",
                str(resp),
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )
        return resp.read_bytes() if done.returncode == 0 and resp.exists() else b""


def presign(lab: OcspLab, endpoints: Sequence[LabEndpoint]) -> dict[int, bytes]:
    """Per serial number, the answer openssl's responder gives now (no nonce)."""
    serials = [x509.load_pem_x509_certificate(e.cert.read_bytes()).serial_number for e in endpoints]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda e: sign_ahead(lab, _request(lab, e)), endpoints))
    missing = [e.name for e, a in zip(endpoints, answers, strict=True) if not a]
    if missing:
        raise RuntimeError(f"the OCSP responder did not answer for {', '.join(missing[:5])}")
    return dict(zip(serials, answers, strict=True))


@contextlib.contextmanager
def presigned_responder(lab: OcspLab, answers: dict[int, bytes]) -> Iterator[None]:
    """Replace the lab's responder (one ``openssl ocsp`` run per request) with one that serves
    the pre-signed answers, on the same port, as CAs serve OCSP (RFC 5019: responses signed
    ahead, cached, no nonce). A request for another serial still goes to openssl."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, der: bytes | None) -> None:
            body = b""
            if der:
                try:
                    serial = ocsp.load_der_ocsp_request(der).serial_number
                except ValueError:
                    serial = None
                if serial is not None:
                    body = answers.get(serial) or lab.respond(der)
            if not body:
                self.send_error(400, "not an OCSP request")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/ocsp-response")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length", "0")
            if not length.isdigit() or int(length) > MAX_OCSP_REQUEST:
                self.send_error(413, "request too large")
                return
            self._answer(self.rfile.read(int(length)))

        def do_GET(self) -> None:
            encoded = urllib.parse.unquote(self.path.rsplit("/", 1)[-1])
            try:
                der: bytes | None = base64.b64decode(encoded, validate=True)
            except ValueError:
                der = None
            self._answer(der)

    class Server(http.server.ThreadingHTTPServer):
        # socketserver's default backlog of 5 drops the SYNs of a client that opens 8
        # connections at once: each dropped one then waits a second for its retransmission.
        request_queue_size = 128

    lab.stop_responder()
    httpd = Server(("127.0.0.1", lab.ocsp_port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------ servers


def _port_on(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def assign_ports(endpoints: Sequence[LabEndpoint]) -> list[LabEndpoint]:
    """A free port per endpoint on its own address; Dovecot's share one port (one listener)."""
    dovecot = [e for e in endpoints if e.server == "dovecot"]
    shared = _port_on(dovecot[0].address) if dovecot else 0
    return [
        replace(e, port=shared if e.server == "dovecot" else _port_on(e.address)) for e in endpoints
    ]


def _wait_all(endpoints: Sequence[LabEndpoint], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    for endpoint in endpoints:
        left = max(deadline - time.monotonic(), 0.5)
        try:
            wait_for_port(endpoint.port, host=endpoint.address, timeout=left)
        except TimeoutError as exc:
            text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not listen: {exc}\n{text}") from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nginx_config(endpoints: Sequence[LabEndpoint], folder: Path, workers: int) -> str:
    """One ``server`` per endpoint: its address and port, its certificate, its staple."""
    temp = folder / "temp"
    blocks = []
    for e in endpoints:
        lines = [
            "    server {",
            f"        listen {e.address}:{e.port} ssl;",
            f"        server_name {e.name};",
            f"        ssl_certificate {e.cert};",
            f"        ssl_certificate_key {e.key};",
        ]
        if e.kind == "weak-key":
            lines.append(f'        ssl_ciphers "{WEAK_CIPHERS}";')
        if e.staple_file is not None:
            lines += ["        ssl_stapling on;", f"        ssl_stapling_file {e.staple_file};"]
        lines += ['        location / { return 200 "lab endpoint\\n"; }', "    }"]
        blocks.append("\n".join(lines))
    user = "user root root;\n" if os.geteuid() == 0 else ""
    servers = "\n".join(blocks)
    return f"""\
{user}worker_processes {workers};
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    default_type text/plain;
    server_tokens off;
    ssl_protocols TLSv1.2 TLSv1.3;
{servers}
}}
"""


@contextlib.contextmanager
def running_nginx(endpoints: Sequence[LabEndpoint], folder: Path, workers: int) -> Iterator[int]:
    """nginx serving the HTTPS endpoints; yields its process id."""
    if not NGINX.exists():
        raise RuntimeError(f"{NGINX} is missing: install nginx (packaging/debian-test.txt)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "temp").mkdir(exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(nginx_config(endpoints, folder, workers), encoding="utf-8")
    base = [str(NGINX), "-c", str(config), "-p", f"{folder}/", "-e", str(folder / "error.log")]
    checked = subprocess.run(
        [*base, "-t", "-q", "-g", "daemon off;"], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        raise RuntimeError(f"nginx -t refused the lab config: {checked.stderr.strip()[-2000:]}")
    with (folder / "nginx.out").open("wb") as out:
        proc = subprocess.Popen([*base, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_all(endpoints, "nginx", folder / "error.log")
        yield proc.pid
    finally:
        _stop(proc)


def dovecot_config(endpoints: Sequence[LabEndpoint], folder: Path) -> str:
    """One IMAP listener on every endpoint's address; the certificate by local address."""
    passwd = folder / "users"
    passwd.write_text("bench:{PLAIN}bench-password\n")
    passwd.chmod(0o640)
    shutil.chown(passwd, group="dovecot")
    first = endpoints[0]
    locals_ = []
    for e in endpoints:
        lines = [f"local {e.address} {{", f"  ssl_cert = <{e.cert}", f"  ssl_key = <{e.key}"]
        if e.kind == "weak-key":
            lines.append(f"  ssl_cipher_list = {WEAK_CIPHERS}")
        lines.append("}")
        locals_.append("\n".join(lines))
    blocks = "\n".join(locals_)
    return f"""\
# mailwarden audit benchmark: IMAP with STARTTLS on {len(endpoints)} addresses (dovecot -c);
# no implicit-TLS listener (port 0: Dovecot's default would take 993)
protocols = imap
base_dir = {folder / "run"}
state_dir = {folder / "state"}
instance_name = mw-bench-{folder.name}
listen = {", ".join(e.address for e in endpoints)}
log_path = {folder / "dovecot.log"}
ssl = yes
ssl_cert = <{first.cert}
ssl_key = <{first.key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {first.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
  unix_listener {folder / AUTH_SOCKET} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
{blocks}
"""


@contextlib.contextmanager
def running_dovecot(endpoints: Sequence[LabEndpoint]) -> Iterator[tuple[int, Path]]:
    """Dovecot serving the IMAP endpoints; yields its master's process id and the SASL socket
    Postfix authenticates through.

    Its folder is under /var/tmp: the login processes run as ``dovenull`` and must traverse it.
    The addresses are never 127.0.0.1, so a client there is not taken for a local one (Dovecot
    would then offer plaintext logins regardless of ``disable_plaintext_auth``).
    """
    if not DOVECOT.exists() or not Path("/usr/lib/dovecot/imap-login").exists():
        raise RuntimeError("dovecot-core and dovecot-imapd are missing (packaging/debian-test.txt)")
    folder = Path(tempfile.mkdtemp(prefix="mw-bench-dovecot-", dir="/var/tmp"))
    folder.chmod(0o755)
    try:
        for sub in ("run", "state"):
            (folder / sub).mkdir()
        conf = folder / "dovecot.conf"
        conf.write_text(dovecot_config(endpoints, folder))
        with (folder / "dovecot.out").open("wb") as out:
            proc = subprocess.Popen(
                [str(DOVECOT), "-F", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            _wait_all(endpoints, "dovecot", folder / "dovecot.log")
            socket_path = folder / AUTH_SOCKET
            deadline = time.monotonic() + 20
            while not socket_path.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot made no auth socket {socket_path}")
                time.sleep(0.05)
            yield proc.pid, socket_path
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def postfix_main_cf(folder: Path, some: LabEndpoint, auth_socket: Path) -> str:
    return f"""\
# mailwarden audit benchmark: SMTP with STARTTLS only (postfix -c)
compatibility_level = 3.6
queue_directory = {folder / "spool"}
data_directory = {folder / "data"}
maillog_file = {folder / "log" / "postfix.log"}
maillog_file_prefixes = {folder / "log"}
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
default_transport = error:nothing leaves this benchmark instance
smtp_dns_support_level = disabled
biff = no
smtputf8_enable = no
smtpd_tls_security_level = may
smtpd_tls_chain_files = {some.key}, {some.cert}
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth_socket}
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = permit_sasl_authenticated, reject
"""


def postfix_master_cf(endpoints: Sequence[LabEndpoint]) -> str:
    """One ``smtpd`` per endpoint, on its address and port, with its certificate."""
    lines = []
    for e in endpoints:
        lines += [
            f"{e.address}:{e.port} inet n - n - - smtpd",
            f"  -o syslog_name=mw-bench/ep{e.index:03d}",
            f"  -o smtpd_tls_chain_files={e.key},{e.cert}",
        ]
        if e.kind == "weak-key":
            lines.append(f"  -o tls_medium_cipherlist={WEAK_CIPHERS}")
    lines.append("tlsmgr    unix  -       -       n       1000?   1       tlsmgr")
    return "\n".join(lines) + "\n" + MASTER_SERVICES


def _postfix(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POSTFIX), "-c", str(conf), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def running_postfix(endpoints: Sequence[LabEndpoint], auth_socket: Path) -> Iterator[int]:
    """A Postfix instance serving the SMTP endpoints (submission: STARTTLS, then AUTH through
    Dovecot's ``auth_socket``); yields its master's process id."""
    if not POSTFIX.exists():
        raise RuntimeError(f"{POSTFIX} is missing: install postfix (packaging/debian-test.txt)")
    folder = Path(tempfile.mkdtemp(prefix="mw-bench-postfix-", dir="/var/tmp"))
    folder.chmod(0o755)
    conf = folder / "conf"
    try:
        for sub in ("conf", "spool", "data", "log"):
            (folder / sub).mkdir()
        shutil.chown(folder / "data", user="postfix", group="postfix")
        (conf / "main.cf").write_text(postfix_main_cf(folder, endpoints[0], auth_socket))
        (conf / "master.cf").write_text(postfix_master_cf(endpoints))
        started = _postfix(conf, "start")
        log = folder / "log" / "postfix.log"
        if started.returncode != 0:
            text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"postfix did not start: {started.stdout}{started.stderr}{text}")
        try:
            master = int((folder / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            master = 0
        try:
            _wait_all(endpoints, "postfix", log)
            yield master
        finally:
            _postfix(conf, "stop")
            deadline = time.monotonic() + 15
            while master and Path(f"/proc/{master}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def zone(endpoints: Sequence[LabEndpoint]) -> str:
    """The ``bench.test`` records: one A record per endpoint name."""
    return "".join(f"{e.name}. 300 IN A {e.address}\n" for e in endpoints)


# ------------------------------------------------------------------------------ the lab


@dataclass
class Lab:
    folder: Path
    endpoints: list[LabEndpoint]
    ocsp: OcspLab
    knot: KnotServer
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The one certificate clients of the lab trust."""
        return self.ocsp.root

    @property
    def nameserver(self) -> str:
        return self.knot.nameserver


OcspMode = Literal["presigned", "live"]


@contextlib.contextmanager
def running_lab(
    folder: Path, *, nginx_workers: int = 2, ocsp_mode: OcspMode = "presigned"
) -> Iterator[Lab]:
    """Build the PKI and certificates, start the responder, DNS, nginx, Dovecot and Postfix.

    ``ocsp_mode``: ``presigned`` answers from responses openssl's responder signed at start
    (:func:`presigned_responder`); ``live`` runs ``openssl ocsp`` for every request (the test
    fixture's responder: one process per request, which on a small machine makes the lab, not
    the client, the slow part).
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        ocsp_lab = stack.enter_context(running_ocsp_lab(folder / "pki"))
        endpoints = issue_all(ocsp_lab, assign_ports(plan()), folder / "certs")
        if ocsp_mode == "presigned":
            stack.enter_context(presigned_responder(ocsp_lab, presign(ocsp_lab, endpoints)))
        knot = stack.enter_context(running_knot({DOMAIN: zone(endpoints)}, folder))
        lab = Lab(folder, endpoints, ocsp_lab, knot)
        by_server = {s: [e for e in endpoints if e.server == s] for s in MIX}
        lab.pids["nginx"] = stack.enter_context(
            running_nginx(by_server["nginx"], folder / "nginx", nginx_workers)
        )
        lab.pids["dovecot"], auth = stack.enter_context(running_dovecot(by_server["dovecot"]))
        lab.pids["postfix"] = stack.enter_context(running_postfix(by_server["postfix"], auth))
        yield lab


def site_toml(endpoints: Sequence[LabEndpoint], root: Path) -> str:
    """The site file: every lab endpoint in ``[[audit.endpoints]]``, MX look-ups off.

    A site file needs a service set; its servers are two of the lab endpoints (the same
    host:port, so the audit merges them). The autoconfig host (``[server] public_host``, always
    audited on port 443) is a name the lab does not publish: one finding about no endpoint.
    """
    imap = next(e for e in endpoints if e.server == "dovecot")
    smtp = next(e for e in endpoints if e.server == "postfix")
    lines = [
        f'primary_domain = "{DOMAIN}"',
        "",
        "[organisation]",
        'name = "Audit benchmark lab"',
        'short_name = "Bench"',
        "",
        "[server]",
        f'public_host = "{AUTOCONFIG_HOST}"',
        "",
        "[directory]",
        'backend = "embedded"',
        'path = "users.sqlite"',
        "",
        "[[services.lab.imap]]",
        f'host = "{imap.name}"',
        f"port = {imap.port}",
        'tls = "starttls"',
        "",
        "[[services.lab.smtp]]",
        f'host = "{smtp.name}"',
        f"port = {smtp.port}",
        'tls = "starttls"',
        "",
        f'[domains."{DOMAIN}"]',
        'services = "lab"',
        "",
        "[audit]",
        "mx = false",
        f'ca_file = "{root}"',
        "",
    ]
    for e in endpoints:
        lines += [
            "[[audit.endpoints]]",
            f'host = "{e.name}"',
            f"port = {e.port}",
            f'protocol = "{e.protocol}"',
            f'tls = "{e.tls}"',
            "",
        ]
    return "\n".join(lines)
