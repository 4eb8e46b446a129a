"""Device addresses and the local route (layer ``fleet``; pure but for ``ip``).

Every emulated device has its own IPv6 address: the fleet prefix plus the
modified EUI-64 interface identifier that SLAAC derives (RFC 4291, Appendix
A; RFC 4862): the EUI-64 with the universal/local bit (0x02 of the first
octet) inverted. The same EUI-64 thus always gets the same address.

One socket bound to ``[::]`` serves all of them (IPV6_PKTINFO to learn and set
the local address, IPV6_FREEBIND to send from any of them, see
:mod:`emulator.net.udp`) once the kernel treats the whole prefix as local::

    ip -6 route add local fd00:6d66::/64 dev lo

:class:`LocalRoute` installs that route when we run as root and removes it on
exit. Without root the exact command is logged, and ``auto`` addressing falls
back to ``loopback-ports``: device ``i`` on its own socket ``[::1]:base+i``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

logger = logging.getLogger(__name__)

UL_BIT = 1 << 57
"""The universal/local bit (0x02 of octet 0) inside a 64-bit EUI-64."""
EUI64_MAX = (1 << 64) - 1


def interface_id(eui64: int) -> int:
    """The modified EUI-64 interface identifier (RFC 4291, Appendix A)."""
    if not 0 <= eui64 <= EUI64_MAX:
        raise ValueError(f"EUI-64 {eui64:#x} out of range")
    return eui64 ^ UL_BIT


def eui64_text(eui64: int) -> str:
    """16 lower-case hex digits, as CSMP DeviceID and FND's eid write it."""
    return f"{eui64:016x}"


def device_address(prefix: ipaddress.IPv6Network, eui64: int) -> str:
    """``prefix`` + the SLAAC interface id of ``eui64``, compressed text."""
    if prefix.prefixlen > 64:
        raise ValueError(f"prefix {prefix} is longer than /64")
    value = int(prefix.network_address) | interface_id(eui64)
    # inet_ntop is RFC 5952 text like str(IPv6Address) (~20x faster: 100,000
    # devices are planned at every start) but for the IPv4-embedding forms.
    text = socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))
    return text if "." not in text else str(ipaddress.IPv6Address(value))


def fleet_euis(base: int, count: int) -> Iterator[int]:
    """The EUI-64s of a generated fleet: ``base``, ``base + 1``, ..."""
    return iter(range(base, base + count))


def group_address(base: str, group_id: int, explicit: dict[int, str]) -> str:
    """IPv6 multicast address of firmware group ``group_id``.

    ``explicit`` wins; otherwise ``base + group_id`` (so ``ff05::6d66:0:0:0``
    and group 7 give ``ff05::6d66:0:0:7``).
    """
    if group_id in explicit:
        return explicit[group_id]
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(base)) + group_id))


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def route_command(action: str, prefix: str, interface: str) -> list[str]:
    """``ip -6 route <action> local <prefix> dev <interface>``."""
    return ["ip", "-6", "route", action, "local", prefix, "dev", interface]


class LocalRoute:
    """The ``local`` route that makes a whole prefix ours; removed on exit."""

    def __init__(self, prefix: str, interface: str = "lo") -> None:
        self.prefix = prefix
        self.interface = interface
        self.installed = False
        """True when we added the route (and so must remove it)."""

    def present(self) -> bool:
        """Whether the kernel already routes the prefix as local."""
        ip = shutil.which("ip")
        if ip is None:
            return False
        cmd = [ip, "-6", "route", "show", "table", "local", self.prefix]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return out.returncode == 0 and out.stdout.strip().startswith("local")

    def install(self) -> bool:
        """Add the route; False (with the command logged) when we cannot."""
        if self.present():
            logger.info("local route for %s already present", self.prefix)
            return True
        cmd = route_command("add", self.prefix, self.interface)
        if not is_root() or shutil.which("ip") is None:
            logger.warning("not root: run as root: %s", " ".join(cmd))
            return False
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            logger.warning("%s failed: %s", " ".join(cmd), out.stderr.strip())
            return False
        self.installed = True
        logger.info("installed: %s", " ".join(cmd))
        return True

    def remove(self) -> None:
        """Delete the route if we added it (idempotent)."""
        if not self.installed:
            return
        self.installed = False
        cmd = route_command("del", self.prefix, self.interface)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            logger.warning("%s failed: %s", " ".join(cmd), out.stderr.strip())
        else:
            logger.info("removed: %s", " ".join(cmd))
