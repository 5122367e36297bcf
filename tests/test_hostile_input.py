"""What an attacker can send, thrown at the server.

The endpoints are unauthenticated and reachable from the internet, so: bodies are capped
(413, whether the size is declared or streamed), XML never expands an entity or loads a DTD,
every value a client or the directory supplies is escaped, and no request, however odd,
produces a 5xx or a traceback. The last test lets hypothesis search for one.

The application answers most of them in this process (``app``, tests/fixtures/inprocess.py);
what is about the wire — streamed bodies, a declared length without the data, malformed HTTP,
the random storm and the server log after it — goes to the real server (``server``, slow).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import defusedxml.ElementTree as ET
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.profiles import outlook
from mailwarden.server.http import BadRequest, QueryTooLong, query_params
from tests.fixtures.inprocess import InProcessClient, inprocess_client
from tests.fixtures.net import free_port
from tests.fixtures.policy_site import write_policy_site
from tests.fixtures.server import running_server, server_log

POX_PATH = "/autodiscover/autodiscover.xml"
NS_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
NS_2006A = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
LIMIT = 16 * 1024


def request_body(email: str, doctype: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{doctype}'
        f'<Autodiscover xmlns="{NS_REQUEST}"><Request><EMailAddress>{email}</EMailAddress>'
        f"<AcceptableResponseSchema>{NS_2006A}</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


def error_code(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.text.split("<ErrorCode>")[1].split("<")[0])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    site = write_policy_site(tmp_path_factory.mktemp("hostile"))
    with running_server(site, workers=1) as base:
        yield base


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessClient]:
    with inprocess_client(write_policy_site(tmp_path_factory.mktemp("hostile-app"))) as client:
        yield client


# -- body size ----------------------------------------------------------------------------------


def test_body_at_the_limit_is_read(app: InProcessClient) -> None:
    body = request_body("named@dir.example")
    padded = body + b" " * (LIMIT - len(body))
    assert len(padded) == LIMIT
    r = app.post(POX_PATH, content=padded)
    assert r.status_code == 200
    assert "<LoginName>n0042</LoginName>" in r.text


def test_body_over_limit_with_content_length_is_413(app: InProcessClient) -> None:
    r = app.post(POX_PATH, content=b"x" * (LIMIT + 1))
    assert r.status_code == 413
    assert r.text == "request body too large\n"


@pytest.mark.slow
def test_body_over_limit_chunked_is_413(server: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"<" * 1024

    r = httpx.post(server + POX_PATH, content=chunks())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert r.status_code == 413


@pytest.mark.slow
def test_declared_length_is_refused_before_the_body_arrives(server: str) -> None:
    """A client announcing 1 GB gets its 413 at once; the server does not wait for the data."""
    port = int(server.rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1000000000\r\n\r\n"
        )
        started = time.monotonic()
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    assert time.monotonic() - started < 2


# -- XML attacks --------------------------------------------------------------------------------

BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)


def test_billion_laughs_refused_without_expansion(app: InProcessClient) -> None:
    started = time.monotonic()
    r = app.post(POX_PATH, content=request_body("&lol9;@dir.example", BILLION_LAUGHS))
    assert time.monotonic() - started < 2
    assert error_code(r) == 600
    assert "lollol" not in r.text
    assert len(r.content) < 1000
    assert app.get("/healthz").status_code == 200


def test_xxe_file_refused(app: InProcessClient) -> None:
    doctype = '<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    r = app.post(POX_PATH, content=request_body("&xxe;", doctype))
    assert error_code(r) == 600
    assert "root:" not in r.text
    assert "/bin/" not in r.text


def test_external_dtd_and_entity_never_fetched(app: InProcessClient) -> None:
    """The DTD and entity point at a listener of ours: nobody may connect to it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    listener.listen(4)
    listener.settimeout(1.5)
    port = listener.getsockname()[1]
    connected: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            connected.append(listener.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        for doctype in (
            f'<!DOCTYPE Autodiscover SYSTEM "http://127.0.0.1:{port}/x.dtd">',
            f'<!DOCTYPE a [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p">%p;]>',
            f'<!DOCTYPE a [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/e">]>',
        ):
            r = app.post(POX_PATH, content=request_body("&e;", doctype))
            assert error_code(r) == 600
        thread.join()
    finally:
        listener.close()
    assert connected == []


def test_deeply_nested_xml_is_600_not_500(app: InProcessClient) -> None:
    depth = (LIMIT - 100) // 7
    body = b"<a>" * depth + b"</a>" * depth
    assert error_code(app.post(POX_PATH, content=body)) == 600


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0" encoding="no-such-encoding"?><a/>',
        b'<?xml version="1.0" encoding="utf-16"?><a/>',
        b"\x00\x01\x02",
        "<Autodiscover>\u202e</Autodiscover>".encode(),
    ],
)
def test_odd_encodings_are_600(app: InProcessClient, body: bytes) -> None:
    assert error_code(app.post(POX_PATH, content=body)) == 600


# -- escaping ---------------------------------------------------------------------------------


def test_directory_values_escaped_in_autoconfig(app: InProcessClient) -> None:
    r = app.get("/mail/config-v1.1.xml", params={"emailaddress": "esc@dir.example"})
    assert r.status_code == 200
    root = ET.fromstring(r.content)  # well-formed despite the markup characters
    assert {u.text for u in root.iter("username")} == {"x<&\"'>y"}
    assert root.findtext("emailProvider/displayName") == "Dir <Mail> & Co"
    assert root.findtext("emailProvider/displayShortName") == "P&T"


def test_site_values_escaped_in_autoconfig_attributes(app: InProcessClient) -> None:
    r = app.get("/mail/config-v1.1.xml", headers={"host": "plain.example"})
    root = ET.fromstring(r.content)
    assert root.findtext("emailProvider/displayName") == "Policy <Test> & \"Quotes\" 'Inc'"
    documentation = root.find("emailProvider/documentation")
    assert documentation is not None
    assert documentation.get("url") == "https://help.plain.example/mail?a=1&b=2"


def test_directory_values_escaped_in_pox(app: InProcessClient) -> None:
    r = app.post(POX_PATH, content=request_body("esc@dir.example"))
    root = ET.fromstring(r.content)
    ns = f"{{{NS_2006A}}}"
    assert root.findtext(f"{ns}Response/{ns}User/{ns}DisplayName") == "Q <&'> R"
    logins = {e.text for e in root.iter(f"{ns}LoginName")}
    assert logins == {"x<&\"'>y"}


def test_client_values_escaped_in_json(app: InProcessClient) -> None:
    nasty = "\"}<script>\\u0000&'{"
    r = app.get(
        "/autodiscover/autodiscover.json",
        params={"Email": "a@dir.example", "Protocol": nasty},
    )
    assert r.status_code == 400
    data = json.loads(r.text)
    assert set(data) == {"ErrorCode", "ErrorMessage"}  # the quote did not break out
    assert f"'{nasty}'" in data["ErrorMessage"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    r = app.get(
        "/autodiscover/autodiscover.json",
        params={"Email": 'x"<y>@z', "Protocol": "AutodiscoverV1"},
    )
    assert r.status_code == 400
    assert json.loads(r.text)["ErrorCode"] == "InvalidUser"


def test_address_echo_in_redirect_is_encoded(app: InProcessClient) -> None:
    r = app.get("/mail/config-v1.1.xml", params={"emailaddress": "a+b&c=d@old.example"})
    assert r.status_code == 302
    assert r.headers["location"].endswith("?emailaddress=a%2Bb%26c%3Dd%40new.example")


# -- smaller findings, as they were first seen ------------------------------------------------


def test_unicode_noncharacter_never_gives_a_broken_mobileconfig(app: InProcessClient) -> None:
    """U+FFFE in an address once gave a ``/mobileconfig`` no XML parser accepts."""
    for char in ("%EF%BF%BE", "%EF%BF%BF"):
        r = app.get(f"/mobileconfig?emailaddress=a{char}@plain.example")
        assert r.status_code == 400, r.text
        r = app.get(f"/mail/config-v1.1.xml?emailaddress=a{char}@plain.example")
        assert r.status_code == 400  # refused, no longer silently dropped from the document


def test_json_v1_path_is_not_decoded_twice(app: InProcessClient) -> None:
    base = "/autodiscover/autodiscover.json/v1.0/"
    assert app.get(base + "named%40dir.example?Protocol=AutodiscoverV1").status_code == 200
    r = app.get(base + "named%2540dir.example?Protocol=AutodiscoverV1")
    assert r.status_code == 400
    assert json.loads(r.text)["ErrorCode"] == "InvalidUser"


def test_invalid_utf8_is_not_an_address(app: InProcessClient) -> None:
    for url in (
        "/mail/config-v1.1.xml?emailaddress=%FF%FE@plain.example",
        "/autodiscover/autodiscover.json/v1.0/%FF@plain.example?Protocol=AutodiscoverV1",
        "/autodiscover/autodiscover.json?Email=%FF@plain.example&Protocol=AutodiscoverV1",
        "/mobileconfig?emailaddress=%FF@plain.example",
        "/?emailaddress=%FF@plain.example",
    ):
        r = app.get(url)
        assert r.status_code == 400, (url, r.status_code, r.text)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "TRACE", "POST", "OPTIONS"])
def test_health_and_metrics_refuse_other_methods(app: InProcessClient, method: str) -> None:
    for path in ("/healthz", "/metrics"):
        r = app.request(method, path)
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD"
    assert app.head("/healthz").status_code == 200


# -- malformed HTTP on the wire -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n0\r\n\r\n",
        b"GET /mail/config-v1.1.xml?emailaddress=%ff%fe%00@x HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
    ],
)
def test_malformed_http_never_5xx(server: str, raw: bytes) -> None:
    port = int(server.rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        try:
            reply = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    if reply:  # closing the connection without an answer is also fine
        status = int(reply.split(b" ", 2)[1])
        assert status < 500, reply
        assert b"Traceback" not in reply
    assert httpx.get(f"{server}/healthz").status_code == 200


# -- hypothesis: random requests at the running server ---------------------------------------------

_ROUTES = [
    "/mail/config-v1.1.xml",
    "/.well-known/autoconfig/mail/config-v1.1.xml",
    "/autodiscover/autodiscover.xml",
    "/Autodiscover/Autodiscover.xml",
    "/autodiscover/autodiscover.json",
    "/autodiscover/autodiscover.json/v1.0/",
    "/healthz",
    "/metrics",
    "/",
]
_ADDRESSES = st.one_of(
    st.sampled_from(
        ["named@dir.example", "esc@dir.example", "x@old.example", "x@reject.example", "a@b"]
    ),
    st.text(max_size=80),
)
_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=120,
).map(str.strip)  # HTTP itself has no leading/trailing white space in values
_paths = st.one_of(
    st.sampled_from(_ROUTES),
    st.builds(lambda r, t: r + t, st.sampled_from(_ROUTES), st.text(max_size=40)),
    st.text(max_size=60).map(lambda t: "/" + t),
)
_queries = st.one_of(
    st.just(""),
    st.builds(lambda a: "emailaddress=" + quote(a, safe=""), _ADDRESSES),
    st.builds(
        lambda a, p: f"Email={quote(a, safe='')}&Protocol={quote(p, safe='')}",
        _ADDRESSES,
        st.one_of(st.just("AutodiscoverV1"), st.text(max_size=20)),
    ),
    st.text(max_size=200).map(lambda t: quote(t, safe="=&%")),
    st.integers(0, 120).map(lambda n: "&".join(["emailaddress=a%40dir.example"] * n)),
)
_bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=600),
    st.builds(request_body, _ADDRESSES.map(lambda a: a.replace("<", "&lt;"))),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from([request_body("named@dir.example")[:80], b"<?xml version='1.0'?>"]),
        st.binary(max_size=200),
    ),
    st.text(max_size=20).map(
        lambda e: f'<?xml version="1.0" encoding="{e}"?><Autodiscover/>'.encode()
    ),
)
_headers = st.dictionaries(
    st.sampled_from(
        ["host", "user-agent", "content-type", "x-forwarded-proto", "x-forwarded-for", "accept"]
    ),
    st.one_of(
        _header_text,
        st.sampled_from(
            ["autoconfig.dir.example", "dir.example:1", "Microsoft Office/12.0", "https", "[::1]"]
        ),
    ),
    max_size=4,
)


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10) as c:
        yield c


@pytest.mark.slow
@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE", "TRACE", "PATCH"]),
    path=_paths,
    query=_queries,
    headers=_headers,
    body=_bodies,
)
def test_random_requests_never_5xx(
    client: httpx.Client,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    url = quote(path, safe="/%.-_~") + ("?" + query if query else "")
    try:
        r = client.request(
            method,
            url,
            headers=[(k.encode(), v.encode("latin-1")) for k, v in headers.items()],
            content=body if method not in ("GET", "HEAD") else None,
        )
    except httpx.LocalProtocolError:  # not expressible in HTTP/1.1: nothing was sent
        return
    except httpx.RemoteProtocolError:  # the server may hang up on nonsense; never crash
        return
    assert r.status_code < 500, (r.status_code, r.text)
    assert b"Traceback" not in r.content
    if path in ("/healthz", "/metrics") and method not in ("GET", "HEAD"):
        assert (r.status_code, r.headers.get("allow")) == (405, "GET, HEAD")
    assert b'File "' not in r.content


@pytest.mark.slow
def test_server_healthy_after_the_storm(
    server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert httpx.get(f"{server}/healthz").text == "ok\n"
    log = server_log(server)
    assert "Traceback" not in log.read_text(), "the server logged an unexpected exception"
    r = httpx.get(f"{server}/mail/config-v1.1.xml", params={"emailaddress": "named@dir.example"})
    assert "<username>n0042</username>" in r.text
    metrics = httpx.get(f"{server}/metrics").text
    assert 'status="500"' not in metrics


# -- the parsers behind the endpoints, as properties ---------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(lambda t: request_body(t).replace(b"&", b"&amp;")),
        st.builds(
            lambda head, cut, tail: head[:cut] + tail,
            st.just(request_body("named@dir.example")),
            st.integers(0, 400),
            st.binary(max_size=50),
        ),
    )
)
def test_pox_parser_raises_only_its_own_error(body: bytes) -> None:
    try:
        request = outlook.parse_request(body)
    except outlook.PoxRequestError as exc:
        code = exc.code
    else:
        assert 0 < len(request.email) <= outlook.MAX_FIELD
        return
    assert code in (outlook.ErrorCode.INVALID_REQUEST, outlook.ErrorCode.SCHEMA_UNAVAILABLE)


_xml_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=80
).filter(lambda t: t.strip() == t)


@settings(max_examples=200, deadline=None)
@given(_xml_text)
def test_pox_parser_returns_the_escaped_address_unchanged(email: str) -> None:
    escaped = email.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert outlook.parse_request(request_body(escaped)).email == email


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6000))
def test_query_parser_raises_only_its_own_errors(raw: bytes) -> None:
    try:
        params = query_params({"query_string": raw})
    except (QueryTooLong, BadRequest):  # 414, 400 (not UTF-8)
        return
    assert all(key == key.lower() for key in params)
