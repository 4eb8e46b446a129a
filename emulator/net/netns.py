"""A two-host IPv6 lab in network namespaces (needs root and iproute2).

Used by the demo and the tests to put the head-end and the fleet on separate
"hosts" joined by a veth pair, with real IPv6 multicast between them:

    [ns <name>-he] veth <name>h  fd00:6d66:ffff::1/64
          |                                   route: fleet prefix via ::2
    [ns <name>-fl] veth <name>f  fd00:6d66:ffff::2/64   local route of the
                                                        fleet prefix on lo

A second veth pair joins the calling (root) namespace to the head-end's, so
that tools running here reach the head-end's HTTP API at ``headend_mgmt_addr``
(``fd00:6d66:fffe::2``; this side is ``fd00:6d66:fffe::1``).

Multicast leaves by the veth (the kernel's ff00::/8 route of each interface;
senders pick it with IPV6_MULTICAST_IF).

:class:`TwoHostLab` is a context manager: everything it creates is removed on
exit, also after an error. Commands are run with ``ip -n`` (no shell).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from types import TracebackType

log = logging.getLogger(__name__)

LINK_PREFIX = "fd00:6d66:ffff::"
MGMT_PREFIX = "fd00:6d66:fffe::"


def can_create_namespaces() -> bool:
    """Root and iproute2 present (the lab is possible)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str, check: bool = True) -> None:
    cmd = ["ip", *args]
    log.debug("run %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")


class TwoHostLab:
    """Head-end namespace and fleet namespace joined by a veth pair."""

    def __init__(self, name: str, fleet_prefix: str) -> None:
        if len(name) > 10:
            raise ValueError("lab name must be at most 10 characters")
        self.name = name
        self.fleet_prefix = fleet_prefix
        self.headend_ns = f"{name}-he"
        self.fleet_ns = f"{name}-fl"
        self.headend_if = f"{name}h"
        self.fleet_if = f"{name}f"
        self.headend_addr = LINK_PREFIX + "1"
        self.fleet_link_addr = LINK_PREFIX + "2"
        self.mgmt_if = f"{name}m"
        self.headend_mgmt_addr = MGMT_PREFIX + "2"
        self._created: list[str] = []
        self._mgmt_created = False

    def __enter__(self) -> TwoHostLab:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        for ns in (self.headend_ns, self.fleet_ns):
            _ip("netns", "add", ns)
            self._created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", self.headend_if, "netns", self.headend_ns, "type", "veth",
            "peer", "name", self.fleet_if, "netns", self.fleet_ns)  # fmt: skip
        sides = (
            (self.headend_ns, self.headend_if, self.headend_addr),
            (self.fleet_ns, self.fleet_if, self.fleet_link_addr),
        )
        for ns, dev, addr in sides:
            _ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up", "multicast", "on")
        _ip("-n", self.headend_ns, "-6", "route", "add", self.fleet_prefix, "via",
            self.fleet_link_addr, "dev", self.headend_if)  # fmt: skip
        _ip("-n", self.fleet_ns, "-6", "route", "add", "local", self.fleet_prefix,
            "dev", "lo")  # fmt: skip
        self._create_mgmt()

    def _create_mgmt(self) -> None:
        _ip("link", "add", self.mgmt_if, "type", "veth", "peer", "name",
            f"{self.name}n", "netns", self.headend_ns)  # fmt: skip
        self._mgmt_created = True
        _ip("addr", "add", f"{MGMT_PREFIX}1/64", "dev", self.mgmt_if, "nodad")
        _ip("link", "set", self.mgmt_if, "up")
        _ip("-n", self.headend_ns, "addr", "add", f"{self.headend_mgmt_addr}/64",
            "dev", f"{self.name}n", "nodad")  # fmt: skip
        _ip("-n", self.headend_ns, "link", "set", f"{self.name}n", "up")

    def ifindex(self, ns: str, dev: str) -> int:
        """Interface index of ``dev`` inside namespace ``ns``."""
        out = subprocess.run(
            ["ip", "-n", ns, "-o", "link", "show", dev],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return int(out.split(":", 1)[0])

    def exec_prefix(self, ns: str) -> list[str]:
        """Command prefix that runs a program inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns]

    def close(self) -> None:
        """Remove the namespaces (the veth pairs go with them)."""
        if self._mgmt_created:
            _ip("link", "del", self.mgmt_if, check=False)
            self._mgmt_created = False
        while self._created:
            ns = self._created.pop()
            _ip("netns", "del", ns, check=False)
