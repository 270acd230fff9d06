"""Outgoing requests to URLs that users typed: they reach the internet, never the inside.

A webhook endpoint or an API base URL is user input. Without a guard, "http://169.254.169.254/"
reads the cloud's credentials, "http://10.0.0.5:5432/" probes the database, and a public name
that resolves to 127.0.0.1 (or that a redirect leads to) does the same more quietly. So:

- only ``http`` and ``https``;
- the host is resolved once, and EVERY address it resolves to must be global: not private,
  loopback, link-local, site-local, multicast, unspecified, reserved or a cloud metadata
  address, in IPv4 or IPv6, including IPv6 forms that embed an IPv4 address
  (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::10.0.0.1``, 6to4);
- the connection goes to an address that was checked: the request's URL is rewritten to it, the
  name is kept in the Host header and, for TLS, in the SNI extension, against which httpcore also
  verifies the certificate (``httpcore/_sync/connection.py``: ``server_hostname=sni_hostname``).
  No second lookup happens that DNS rebinding could answer differently;
- redirects, if the caller follows them, go through the same check at every hop;
- no proxy from the environment (``trust_env=False``): a proxy would resolve the name itself;
- every request has a deadline for the whole exchange (connecting, TLS, sending, and reading the
  answer to its last byte), not only a timeout per socket operation: a server that drips one
  byte every half second never trips a 1 s read timeout, and would hold a worker's thread for
  as long as it likes. ``deadline`` (seconds) defaults to the largest of the timeouts; each socket
  operation waits at most ``min(its timeout, the time left)``, and one started after the deadline
  raises the matching ``httpx`` timeout (ConnectTimeout, WriteTimeout, ReadTimeout). A redirect
  hop, where followed, is a request of its own with a deadline of its own.

``settings.OUTGOING_ALLOWED_NETWORKS`` (CIDR strings, empty by default) lets chosen networks
through, e.g. ``127.0.0.1/32`` for a local stand-in in tests and development.

    with guarded_client(timeout=10) as client:    # 10 s per socket operation, 10 s in all
        client.post(endpoint.url, content=body)   # raises UnsafeUrl before connecting
        client.get(url, extensions={"deadline": 3})   # this request: 3 s in all

``url_check(url)`` gives the same verdict without a request, to refuse a URL when it is saved.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx
from django.conf import settings

from app.errors import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})

#: Addresses that hand out cloud credentials or instance data. Most are link-local or private and
#: refused as such anyway; Azure's wire server (168.63.129.16) is not, so it is listed by name.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
    )
)

NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address

#: (property of the address, what to call it), in the order the reason is looked for.
_KINDS = (
    ("is_unspecified", "an unspecified address"),
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    # fec0::/10, deprecated (RFC 3879) but still routed inside some networks; Python counts it
    # neither private nor reserved. IPv4 addresses have no such property (hence getattr).
    ("is_site_local", "a site-local address"),
    ("is_multicast", "a multicast address"),
    ("is_private", "a private address"),
    ("is_reserved", "a reserved address"),
)


class UnsafeUrl(PermanentError):
    """A URL outgoing requests refuse: its scheme, or an address its host resolves to.

    Permanent: asking again reaches the same address (a job that gets it is dead-lettered)."""


def _allowed_networks() -> list[IPNetwork]:
    """Read at each check, so that a changed setting (and override_settings in tests) applies."""
    return [
        ipaddress.ip_network(cidr.strip(), strict=False)
        for cidr in getattr(settings, "OUTGOING_ALLOWED_NETWORKS", [])
        if cidr.strip()
    ]


def _not_global(address: IPAddress) -> str | None:
    """What kind of non-public address ``address`` is, or None for a global one."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for attribute, kind in _KINDS:
        if getattr(address, attribute, False):
            return kind
    if not address.is_global:  # e.g. 100.64.0.0/10, shared by carriers' NAT
        return "not a globally routable address"
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why no request may go to ``address`` ("10.0.0.1 is a private address"), or None.

    IPv6 forms that carry an IPv4 address are judged by it: an IPv4-mapped address is the IPv4
    address (the kernel connects to it over IPv4), and a NAT64 (64:ff9b::/96) or 6to4 gateway
    forwards to it.
    """
    allowed = _allowed_networks()
    if any(address in network for network in allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        shown = f"::ffff:{inner}" if address.ipv4_mapped else str(address)
        if address in NAT64:  # Python calls the whole prefix reserved, as part of ::/8
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            shown = f"64:ff9b::{inner}"
        if inner is not None:
            if any(inner in network for network in allowed):
                return None
            kind = _not_global(inner)
            return f"{shown} leads to {inner}, {kind}" if kind else None
    kind = _not_global(address)
    return f"{address} is {kind}" if kind else None


def _url_parse(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UnsafeUrl(f"{url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        scheme = parsed.scheme or "no scheme"
        raise UnsafeUrl(f"{url}: {scheme} is not allowed, only http and https")
    if not parsed.raw_host:
        raise UnsafeUrl(f"{url} has no host")
    return parsed


def _host_resolve(url: httpx.URL) -> list[IPAddress]:
    """Every address of the URL's host, in the resolver's order, without duplicates.

    ``socket.getaddrinfo`` is looked up at each call, so tests can stand in a resolver."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise httpx.ConnectError(f"{url}: cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 zone id (fe80::1%eth0)
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue  # an address family other than IP
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise httpx.ConnectError(f"{url}: {host} resolves to no IP address")
    return addresses


def url_addresses(url: str | httpx.URL) -> list[IPAddress]:
    """The checked addresses to connect to for ``url``; UnsafeUrl if any of them is refused.

    Any, not the first: the client may try each one, and a name that answers one public and
    one private address is an attack, not a misconfiguration. A host that does not resolve is
    an ``httpx.ConnectError`` (a resolver can be down: transient).
    """
    parsed = _url_parse(url)
    for address in (addresses := _host_resolve(parsed)):
        refusal = address_refusal(address)
        if refusal:
            raise UnsafeUrl(f"{url}: refused, {refusal}")
    return addresses


def url_check(url: str) -> None:
    """Refuse ``url`` (UnsafeUrl) if a request to it would be refused now, e.g. when it is saved.

    One argument, positional, so that it also fits where a validator goes. A host that does not
    resolve is refused too: a user saving the URL wants to hear about the typo now. The check is
    repeated at every request (the name may resolve elsewhere by then)."""
    try:
        url_addresses(url)
    except httpx.ConnectError as exc:
        raise UnsafeUrl(str(exc)) from None


# --- The deadline ---------------------------------------------------------------------------------

#: When the running request must be over (``time.monotonic()``), or None: no deadline. A context
#: variable, set around each call into httpcore, because a connection (and its socket) outlives a
#: request and is reused by the next one, maybe from another thread.
_deadline: ContextVar[float | None] = ContextVar("urlguard_deadline", default=None)

#: A write is made in slices of this size, each bounded by the time left: one socket send waits
#: for buffer space up to its timeout, so a receiver that reads slowly cannot stretch a long one.
_WRITE_SLICE = 16 * 1024


def _time_left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to the running request's remaining time; ``error`` once none is left."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection's socket whose every read, write and TLS handshake ends by the deadline.

    A read returns as soon as any byte arrives and a TLS handshake's timeout spans the handshake
    (CPython's ``_ssl`` counts it as one deadline), so bounding each call by the time left bounds
    the request."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if _deadline.get() is None:
            self._inner.write(buffer, timeout)
            return
        for start in range(0, len(buffer), _WRITE_SLICE):
            piece = buffer[start : start + _WRITE_SLICE]
            self._inner.write(piece, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every stream it opens held to the deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:  # pragma: no cover - the guard allows no unix sockets
        bounded = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineBody(httpx.SyncByteStream):
    """A response body read under its request's deadline, wherever and whenever it is read."""

    def __init__(self, inner: httpx.SyncByteStream, deadline: float) -> None:
        self._inner = inner
        self._at = deadline

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            token = _deadline.set(self._at)
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                _deadline.reset(token)
            yield chunk

    def close(self) -> None:
        self._inner.close()  # no read: httpcore drops a connection whose answer is not done


def _transport_with_deadline(**kwargs: Any) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` whose connections use ``_DeadlineBackend``.

    httpx takes no network backend, so the one its httpcore pool made (before any connection)
    is wrapped; if a new httpx arranges its pool otherwise, this fails here, not silently."""
    transport = httpx.HTTPTransport(**kwargs)
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(
        getattr(pool, "_network_backend", None), httpcore.NetworkBackend
    ):
        raise RuntimeError(
            "urlguard: httpx.HTTPTransport has no httpcore pool to hold to deadlines"
        )
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


def _deadline_check(deadline: Any) -> float:
    if (
        isinstance(deadline, bool)
        or not isinstance(deadline, int | float)
        or not math.isfinite(deadline)
        or deadline <= 0
    ):
        raise TypeError(f"a request's deadline is a number of seconds above 0, not {deadline!r}")
    return float(deadline)


class GuardedTransport(httpx.BaseTransport):
    """Sends each request to a checked address of its host; see the module docstring.

    One ``httpx.HTTPTransport`` (one connection pool) per host name: pools are keyed by the
    address connected to, and two names served from one address must not share a TLS connection
    whose certificate was verified for the other name.

    ``deadline``: seconds each request may take in all; a request's ``"deadline"`` extension
    overrides it.
    """

    def __init__(self, *, deadline: float, **transport_kwargs: Any) -> None:
        self._deadline = _deadline_check(deadline)
        self._kwargs = {**transport_kwargs, "trust_env": False}
        self._transports: dict[tuple[str, bytes, int | None], httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def _transport(self, url: httpx.URL) -> httpx.HTTPTransport:
        key = (url.scheme, url.raw_host, url.port)
        with self._lock:
            if key not in self._transports:
                self._transports[key] = _transport_with_deadline(**self._kwargs)
            return self._transports[key]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        seconds = _deadline_check(request.extensions.get("deadline", self._deadline))
        deadline = time.monotonic() + seconds
        url = request.url
        addresses = url_addresses(url)
        transport = self._transport(url)
        host = url.raw_host.decode("ascii")
        timeout = dict(request.extensions.get("timeout") or {})
        pool = timeout.get("pool")
        timeout["pool"] = seconds if pool is None else min(pool, seconds)  # waiting for a slot
        request.extensions = {**request.extensions, "sni_hostname": host, "timeout": timeout}
        # The Host header was set from the URL when the request was built, and stays.
        token = _deadline.set(deadline)
        try:
            response = self._send(transport, request, url, addresses)
        finally:
            _deadline.reset(token)
            request.url = url  # what the caller, the response and redirects see
        response.stream = _DeadlineBody(response.stream, deadline)  # type: ignore[arg-type]
        return response

    @staticmethod
    def _send(
        transport: httpx.HTTPTransport,
        request: httpx.Request,
        url: httpx.URL,
        addresses: list[IPAddress],
    ) -> httpx.Response:
        for address in addresses[:-1]:
            request.url = url.copy_with(host=str(address))
            try:
                return transport.handle_request(request)
            except httpx.ConnectError:
                continue  # as socket.create_connection does: the next address
        request.url = url.copy_with(host=str(addresses[-1]))
        return transport.handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()


def _timeout_require(timeout: httpx.Timeout | float | None) -> httpx.Timeout:
    """A request to someone else's server without a time limit can hold a worker forever."""
    checked = httpx.Timeout(timeout)  # type: ignore[arg-type]
    missing = [
        name
        for name, value in (
            ("connect", checked.connect),
            ("read", checked.read),
            ("write", checked.write),
            ("pool", checked.pool),
        )
        if value is None
    ]
    if missing:
        raise TypeError(f"guarded_client needs a timeout; none set for {', '.join(missing)}")
    return checked


_NOT_WITH_GUARD: Iterable[str] = ("transport", "mounts", "proxy", "trust_env", "app")


def guarded_client(
    *,
    timeout: httpx.Timeout | float,
    deadline: float | None = None,
    verify: Any = True,
    cert: Any = None,
    http2: bool = False,
    limits: httpx.Limits = httpx.Limits(max_connections=10, max_keepalive_connections=5),  # noqa: B008
    **client_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` whose every request (and redirect hop) goes through the guard.

    ``timeout`` is required: seconds for each socket operation (or an ``httpx.Timeout``).
    ``deadline`` is seconds for a whole request, from connecting to the last byte of the answer
    read; by default the largest of the timeouts, so ``timeout=10`` means 10 s in all too. A
    request's ``extensions={"deadline": seconds}`` overrides it. Redirects are not followed
    unless ``follow_redirects=True``. Options that would route around the guard (a transport,
    mounts, a proxy) are refused.
    """
    refused = [name for name in _NOT_WITH_GUARD if name in client_kwargs]
    if refused:
        raise TypeError(f"guarded_client does not take {', '.join(refused)}: they bypass the guard")
    checked = _timeout_require(timeout)
    if deadline is None:
        deadline = max(t for t in checked.as_dict().values() if t is not None)
    transport = GuardedTransport(
        deadline=deadline, verify=verify, cert=cert, http2=http2, limits=limits
    )
    return httpx.Client(
        transport=transport,
        timeout=checked,
        trust_env=False,
        **client_kwargs,
    )
