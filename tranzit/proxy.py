"""Client address, scheme and host behind trusted proxies (``trusted_proxies``).

A request whose peer is a trusted proxy is seen as the proxy saw it:
``request.remote`` is the right-most ``X-Forwarded-For`` address that is not
itself a trusted proxy, ``request.scheme`` and ``request.host`` come from
``X-Forwarded-Proto`` and ``X-Forwarded-Host``. aiohttp-remotes'
``XForwardedFiltered`` parses the headers and walks the chain; this module only
decides who is trusted. A request from any other peer keeps its own address,
scheme and host whatever headers it sends (no 400: direct access keeps working).

Entries are addresses, networks (``172.16.0.0/12``), ``*`` (any peer) or host
names. A name (the compose service ``nginx``) stands for all its addresses: it
is resolved on the first request and again, at most every
``RESOLVE_INTERVAL`` seconds, when a request comes from a peer that is not yet
trusted (in compose nginx starts after the app, and gets a new address when it
is recreated).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp_remotes import XForwardedFiltered

from .config import Config
from .errors import ConfigError, show
from .throttle import Throttle

__all__ = [
    "HEALTH_PATHS",
    "RESOLVE_INTERVAL",
    "RESOLVE_TIMEOUT",
    "TrustedPeers",
    "TrustedProxies",
    "parse_trusted_proxies",
    "proxy_middleware",
]

log = logging.getLogger("tranzit")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Host names are resolved again at most this often (seconds), on a request from
#: a peer that is not trusted yet.
RESOLVE_INTERVAL = 5.0
#: A lookup that takes longer counts as failed (the previous addresses stay).
RESOLVE_TIMEOUT = 2.0
#: The probes' paths (``/healthz``, ``/readyz``, served by every app): probes call them
#: from anywhere (the kubelet, Docker's healthcheck) and by any name, so neither the proxy
#: headers nor the Host check (tranzit.app) apply to them.
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})

_ANY = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
#: getaddrinfo's answers for "this name does not exist (any more)".
_GONE = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_MAX_VERDICTS = 1024


@dataclass(frozen=True)
class TrustedProxies:
    """``trusted_proxies`` parsed: networks (an address is a /32 or /128) and host names."""

    networks: tuple[IPNetwork, ...] = ()
    names: tuple[str, ...] = ()


def parse_trusted_proxies(entries: Iterable[str]) -> TrustedProxies:
    """Parse ``trusted_proxies``; ``ValueError("expected ..., found ...")`` on a bad entry."""
    networks: list[IPNetwork] = []
    names: list[str] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        if entry == "*":
            networks.extend(_ANY)
            continue
        try:
            networks.append(ipaddress.ip_network(entry))
            continue
        except ValueError as exc:
            problem = str(exc)
        if _is_host_name(entry):
            names.append(entry.rstrip(".").lower())
            continue
        if "/" not in entry and ":" not in entry and not entry.replace(".", "").isdigit():
            problem = "not a valid host name"
        raise ValueError(
            "expected addresses, networks (10.0.0.0/8), host names or *, "
            f"found {show(entry)} ({problem})"
        )
    return TrustedProxies(tuple(dict.fromkeys(networks)), tuple(dict.fromkeys(names)))


def _is_host_name(entry: str) -> bool:
    labels = entry.rstrip(".").split(".")
    return (
        len(entry) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # 300.1.2.3 is a bad address, not a name
    )


def proxy_middleware(config: Config) -> Middleware | None:
    """The middleware honouring ``X-Forwarded-*`` from ``config.trusted_proxies``; None if empty.

    Raises ``ConfigError`` naming the bad entry.
    """
    if not config.trusted_proxies:
        return None
    try:
        trusted = parse_trusted_proxies(config.trusted_proxies)
    except ValueError as exc:
        # Config does not record which of the two the value came from.
        source = "environment TRANZIT_TRUSTED_PROXIES"
        if config.source is not None:
            source = f"{config.source} or {source}"
        raise ConfigError(source, "trusted_proxies", str(exc)) from None
    if not trusted.networks and not trusted.names:
        return None
    peers = TrustedPeers(trusted)

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in HEALTH_PATHS or not await peers.trusts(request.remote):
            return await handler(request)
        return await peers.headers.middleware(request, handler)

    return forwarded


class TrustedPeers:
    """Which peers are trusted proxies, with host names resolved on demand (bounded)."""

    def __init__(
        self,
        trusted: TrustedProxies,
        *,
        interval: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self._networks = trusted.networks
        self._names = trusted.names
        self._interval = RESOLVE_INTERVAL if interval is None else interval
        self._timeout = RESOLVE_TIMEOUT if timeout is None else timeout
        self._resolved: dict[str, frozenset[IPAddress]] = {}
        self._next_lookup = 0.0  # the first request from an unknown peer resolves
        self._lookup: asyncio.Task[None] | None = None
        self._verdicts: dict[str | None, bool] = {}
        self._failures = Throttle(60.0)
        self.headers = XForwardedFiltered(self._networks)

    async def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (``request.remote`` as the socket gave it) is a trusted proxy."""
        verdict = self._verdicts.get(peer)
        if verdict is not None:
            return verdict
        verdict = self._check(peer)
        if not verdict and self._names and time.monotonic() >= self._next_lookup:
            await self._resolve()
            verdict = self._check(peer)
        # With names, "no" is not remembered: an unknown peer may be a proxy that moved.
        if (verdict or not self._names) and len(self._verdicts) < _MAX_VERDICTS:
            self._verdicts[peer] = verdict
        return verdict

    def _check(self, peer: str | None) -> bool:
        if peer is None:  # a Unix socket
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks) or any(
            address in addresses for addresses in self._resolved.values()
        )

    async def _resolve(self) -> None:
        """Look every name up again; concurrent callers share one lookup."""
        if self._lookup is None or self._lookup.done():
            self._next_lookup = time.monotonic() + self._interval
            self._lookup = asyncio.ensure_future(self._lookup_all())
        await asyncio.shield(self._lookup)

    async def _lookup_all(self) -> None:
        results = await asyncio.gather(*(self._lookup_one(name) for name in self._names))
        resolved = dict(self._resolved)
        for name, found in zip(self._names, results, strict=True):
            if found is not None:
                resolved[name] = found
        if resolved == self._resolved:
            return
        self._resolved = resolved
        log.info(
            "trusted proxies: %s",
            ", ".join(f"{name} = {_listed(found)}" for name, found in resolved.items()),
        )
        addresses = {ipaddress.ip_network(a) for found in resolved.values() for a in found}
        self.headers = XForwardedFiltered([*self._networks, *sorted(addresses, key=str)])
        self._verdicts.clear()

    async def _lookup_one(self, name: str) -> frozenset[IPAddress] | None:
        """The name's addresses; empty if it does not exist, None to keep the previous ones."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), self._timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            gone = isinstance(exc, socket.gaierror) and exc.errno in _GONE
            if self._failures.due():
                log.warning(
                    "trusted proxy %r does not resolve (%s): requests from it are not trusted "
                    "until it does; retried at most every %g s",
                    name,
                    str(exc) or "timed out",
                    self._interval,
                )
            return frozenset() if gone else None
        found: set[IPAddress] = set()
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            found.add(address)
        return frozenset(found)


def _listed(addresses: frozenset[IPAddress]) -> str:
    return " ".join(sorted(map(str, addresses))) or "(none)"
