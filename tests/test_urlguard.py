"""The outgoing-URL guard (app/urlguard.py) against real local servers: what it refuses, that it
refuses before connecting, at every redirect hop, and that it connects to the address it checked.

The only stand-in is the system resolver (``socket.getaddrinfo``), where a test needs a name to
answer chosen addresses: a DNS server that rebinds is not something a test machine has.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.urlguard import UnsafeUrl, address_refusal, guarded_client, url_check
from tests.dripping import dripping

LOCAL = override_settings(OUTGOING_ALLOWED_NETWORKS=["127.0.0.1/32"])
REAL_GETADDRINFO = socket.getaddrinfo


class Server:
    """An HTTP(S) server in a thread that answers ``answer(path)`` and records what it got."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        answer: Callable[[str], tuple[int, dict[str, str]]] = lambda path: (200, {}),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.server_names: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append({"path": self.path, "host": self.headers["Host"]})
                status, headers = answer(self.path)
                self.send_response(status)
                for name, value in {"Content-Length": "2", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        if tls is not None:

            def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                self.server_names.append(name)

            tls.sni_callback = sni  # type: ignore[assignment]
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serving(**kwargs: Any) -> Iterator[Server]:
    server = Server(**kwargs)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def resolver(answers: dict[str, list[str]] | Callable[[str], list[str]]) -> Iterator[list[str]]:
    """Names resolve to the given addresses (IP literals to themselves); yields the names asked."""
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            ipaddress.ip_address(host)
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        except ValueError:
            pass
        asked.append(host)
        found = answers(host) if callable(answers) else answers.get(host)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in found
        ]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield asked


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("http://127.0.0.1:8000/", "127.0.0.1 is a loopback address"),
        ("http://[::1]/", "::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address"),
        ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 leads to 127.0.0.1, a loopback address"),
        ("http://[64:ff9b::10.0.0.1]/", "64:ff9b::10.0.0.1 leads to 10.0.0.1, a private address"),
        ("http://[fe80::1]/", "fe80::1 is a link-local address"),
        ("http://[fec0::1]/", "fec0::1 is a site-local address"),  # deprecated, still routed inside
        ("http://[feff:ffff::1]/", "feff:ffff::1 is a site-local address"),
        ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
        ("http://100.64.0.1/", "100.64.0.1 is not a globally routable address"),
        ("http://127.1/", "127.0.0.1 is a loopback address"),  # spellings the resolver accepts
        ("http://2130706433/", "127.0.0.1 is a loopback address"),
        ("ftp://example.com/file", "ftp is not allowed, only http and https"),
        ("file:///etc/passwd", "file is not allowed, only http and https"),
        ("http:///path", "has no host"),
    ],
)
def test_unsafe_urls_are_refused_with_the_address_and_why(url: str, why: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        url_check(url)
    assert why in str(refused.value)
    assert url in str(refused.value)


def test_a_name_is_refused_if_any_of_its_addresses_is_unsafe() -> None:
    url_check("http://8.8.8.8/")  # a global address passes
    with (
        resolver({"hooks.example.test": ["8.8.8.8", "10.1.2.3"]}),
        pytest.raises(UnsafeUrl, match=r"hooks\.example\.test.*10\.1\.2\.3 is a private"),
    ):
        url_check("https://hooks.example.test/in")
    with pytest.raises(UnsafeUrl, match=r"127\.0\.0\.1 is a loopback address"):
        url_check("http://localhost/")  # the machine's own resolver


def test_a_name_that_does_not_resolve_is_refused_when_saved() -> None:
    with resolver({}), pytest.raises(UnsafeUrl, match=r"cannot resolve nowhere\.example\.test"):
        url_check("http://nowhere.example.test/")


def test_a_refused_address_is_never_connected_to() -> None:
    with serving() as server, guarded_client(timeout=5) as client:
        with pytest.raises(UnsafeUrl, match=r"127\.0\.0\.1 is a loopback address"):
            client.get(f"{server.url}/secret")
        with (
            resolver({"inside.example.test": ["127.0.0.1"]}),
            pytest.raises(UnsafeUrl, match=r"inside\.example\.test.*127\.0\.0\.1 is a loopback"),
        ):
            client.get(f"http://inside.example.test:{server.port}/secret")
    assert server.requests == []


def test_allowed_networks_let_a_local_server_through_and_only_it() -> None:
    with (
        serving() as server,
        serving(host="127.0.0.2") as other,
        LOCAL,
        guarded_client(timeout=5) as client,
    ):
        assert client.get(f"{server.url}/ok").status_code == 200
        with pytest.raises(UnsafeUrl, match=r"127\.0\.0\.2 is a loopback address"):
            client.get(f"{other.url}/ok")
    assert [r["path"] for r in server.requests] == ["/ok"]
    assert other.requests == []


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.2:{port}/inside", "http://10.0.0.1/", "http://169.254.169.254/latest"],
)
def test_a_redirect_into_a_refused_address_is_not_followed(target: str) -> None:
    with serving(host="127.0.0.2") as inside:
        location = target.format(port=inside.port)
        with (
            serving(answer=lambda path: (302, {"Location": location})) as server,
            LOCAL,
            guarded_client(timeout=5, follow_redirects=True) as client,
            pytest.raises(UnsafeUrl, match="refused") as refused,
        ):
            client.get(f"{server.url}/start")
    assert location in str(refused.value)
    assert [r["path"] for r in server.requests] == ["/start"]
    assert inside.requests == []


def test_redirects_between_allowed_addresses_are_followed_hop_by_hop() -> None:
    with (
        serving() as end,
        serving(answer=lambda path: (307, {"Location": f"{end.url}/end"})) as start,
        LOCAL,
        guarded_client(timeout=5, follow_redirects=True) as client,
    ):
        response = client.get(f"{start.url}/start")
    assert response.status_code == 200
    assert str(response.url) == f"{end.url}/end"


def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    """DNS rebinding: the name answers an allowed address once, then the metadata address. One
    lookup happens, and the request reaches the server at the checked address with its name in
    the Host header."""
    answers = iter([["127.0.0.1"]])

    def rebinding(host: str) -> list[str]:
        return next(answers, ["169.254.169.254"])

    with (
        serving() as server,
        resolver(rebinding) as asked,
        LOCAL,
        guarded_client(timeout=5) as client,
    ):
        response = client.get(f"http://rebind.example.test:{server.port}/hook")
    assert response.status_code == 200
    assert asked == ["rebind.example.test"]
    assert server.requests == [{"path": "/hook", "host": f"rebind.example.test:{server.port}"}]


def test_tls_is_verified_against_the_name_not_the_address() -> None:
    """The URL is rewritten to the checked address; the certificate must still match the name
    (httpcore passes the sni_hostname extension to ssl as server_hostname)."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example.test").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    names = {"hooks.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]}
    with (
        serving(tls=server_tls) as server,
        resolver(names),
        LOCAL,
        guarded_client(timeout=5, verify=client_tls) as client,
    ):
        good = client.get(f"https://hooks.example.test:{server.port}/")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(f"https://other.example.test:{server.port}/")
    assert good.status_code == 200
    assert server.server_names[0] == "hooks.example.test"
    assert [r["host"] for r in server.requests] == [f"hooks.example.test:{server.port}"]


def read_all(client: httpx.Client, url: str, **kwargs: Any) -> float:
    """Seconds until the request to ``url`` raised (it must), its answer read with iter_raw."""
    started = time.monotonic()
    with (
        pytest.raises(httpx.ReadTimeout),
        client.stream("GET", url, **kwargs) as response,
    ):
        for _chunk in response.iter_raw():
            pass
    return time.monotonic() - started


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_server_that_drips_its_answer_is_cut_off_by_the_timeout_in_all(part: str) -> None:
    """One byte every 0.2 s never trips a 1 s read timeout; the request still ends after 1 s."""
    with dripping(part=part) as server, LOCAL, guarded_client(timeout=1) as client:
        assert 0.9 <= read_all(client, server.url) < 1.8


def test_a_deadline_can_be_set_apart_from_the_timeout_and_per_request() -> None:
    with dripping() as server, LOCAL:
        with guarded_client(timeout=1, deadline=2.5) as client:
            assert 2.4 <= read_all(client, server.url) < 3.3
            assert 0.4 <= read_all(client, server.url, extensions={"deadline": 0.5}) < 1.2
        with pytest.raises(TypeError, match="deadline is a number of seconds above 0"):
            guarded_client(timeout=1, deadline=0)
    assert server.requests == 2


def test_a_deadline_does_not_outlive_its_request() -> None:
    """A kept-alive connection serves the next request, which has a deadline of its own."""
    with serving() as server, LOCAL, guarded_client(timeout=5, deadline=0.5) as client:
        for _ in range(3):
            assert client.get(f"{server.url}/ok").status_code == 200
            time.sleep(0.3)
    assert len(server.requests) == 3


def test_a_client_without_a_timeout_or_with_a_bypass_is_refused() -> None:
    with pytest.raises(TypeError, match="needs a timeout"):
        guarded_client(timeout=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a timeout; none set for read"):
        guarded_client(timeout=httpx.Timeout(5, read=None))
    with pytest.raises(TypeError, match="bypass the guard"):
        guarded_client(timeout=5, proxy="http://127.0.0.1:3128")


# --- Generated input ------------------------------------------------------------------------

GENERATED = hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ADDRESSES = st.ip_addresses() | st.sampled_from(
    [
        ipaddress.ip_address(a)
        for a in ("8.8.8.8", "10.0.0.1", "::ffff:10.0.0.1", "64:ff9b::1", "fec0::1")
    ]
)


def reached(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
    """The address a connection to ``address`` ends at: the IPv4 address inside IPv4-mapped,
    NAT64 and 6to4 addresses, else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        return address.ipv4_mapped or address.sixtofour or address
    return address


def is_global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The standard library's verdict on where the connection ends (multicast, reserved and
    IPv6 site-local addresses count as global there, but are not hosts on the internet)."""
    end = reached(address)
    site_local = getattr(end, "is_site_local", False)
    return bool(end.is_global and not end.is_multicast and not end.is_reserved and not site_local)


def host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


@GENERATED
@given(addresses=st.lists(ADDRESSES, min_size=1, max_size=4))
def test_generated_addresses_pass_only_when_every_one_is_global(
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> None:
    with resolver({"generated.example.test": [str(a) for a in addresses]}):
        try:
            url_check("https://generated.example.test/hook")
        except UnsafeUrl as exc:
            reasons = [r for r in map(address_refusal, addresses) if r]
            assert any(reason in str(exc) for reason in reasons), (exc, reasons)
        else:
            assert all(map(is_global, addresses)), addresses
    for address in addresses:
        refused = address_refusal(address)
        if not is_global(address):
            assert refused, address
        if refused is None:
            assert is_global(address), address
            url_check(f"http://{host(address)}:8080/x")


@GENERATED
@given(
    url=st.text(max_size=80)
    | st.builds(
        lambda scheme, rest: f"{scheme}://{rest}",
        st.sampled_from(["http", "https", "ftp", "file", "gopher", "HTTP", ""]),
        st.text(max_size=60),
    )
)
def test_generated_urls_pass_or_are_refused_as_unsafe_never_anything_else(url: str) -> None:
    """Any name resolves to a loopback address here: only IP literals of global addresses pass."""
    with resolver(lambda name: ["127.0.0.1"]):
        try:
            url_check(url)
        except UnsafeUrl as exc:
            assert str(exc)
            return
    parsed = httpx.URL(url)
    assert parsed.scheme in ("http", "https")
    assert is_global(ipaddress.ip_address(parsed.host))
