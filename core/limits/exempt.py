"""``BAN_EXEMPT_NETWORKS``: client networks that are never rate limited or banned (SPEC §7).

The networks are parsed once, when the limiter is declared. The address tested is the client
IP the pipeline resolved (the socket peer, or ``X-Forwarded-For`` only behind
``TRUSTED_PROXY_COUNT`` trusted proxies), so a forwarded header never makes a client exempt
unless the deployment trusts proxies to write it. A request pays for a dictionary look-up:
the answer is cached per address (a bounded cache), and with no networks configured (the
production default) nothing at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from core.errors import ConfigError

LOOPBACK = ("127.0.0.0/8", "::1/128")  # the default in development and test
CACHE_MAX = 4096  # addresses whose answer is kept


class ExemptNetworks:
    """``ip in networks``: is this client address in one of the exempt networks?"""

    def __init__(self, cidrs: Iterable[str], *, source: str = "settings") -> None:
        networks = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"BAN_EXEMPT_NETWORKS from {source}: expected networks like 10.0.0.0/8 or ::1/128, got {cidr!r}"
                ) from None
        self.networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, ip: object) -> bool:
        if not self.networks or not isinstance(ip, str):
            return False
        hit = self._cache.get(ip)
        if hit is None:
            hit = self._match(ip)
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[ip] = hit
        return hit

    def _match(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False  # "unknown" (no peer address) is nobody's network
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        return any(address.version == net.version and address in net for net in self.networks)

    def __str__(self) -> str:
        return ",".join(str(net) for net in self.networks) or "none"
