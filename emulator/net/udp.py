"""Thin asyncio UDP edge shared by the fleet and the head-end.

The only layer of meshfleet that touches sockets. One :class:`UdpEndpoint` wraps
one non-blocking IPv6 UDP socket:

- batched receive: the loop's reader callback drains up to ``batch`` datagrams
  with ``recvmsg`` and hands them over in one call, so there is no task and no
  per-datagram buffer of asyncio's size;
- with ``pktinfo`` the local (destination) address of every datagram is read
  from IPV6_PKTINFO, and every datagram is sent from the local address given,
  which lets one socket bound to ``[::]`` serve thousands of device addresses
  (IPV6_FREEBIND allows any source in a prefix routed to us, RFC 3542 6.1);
- multicast joins (IPV6_JOIN_GROUP) per group address and interface;
- a socket receive buffer of 4 MiB or more so that bursts are not dropped.

The packed-address caches of ``pktinfo`` (destination bytes -> local address,
source text -> packed IPV6_PKTINFO) keep at most :data:`ADDRESS_CACHE`
entries, cleared when full: a fleet of 100,000 addresses must not hold ~400
bytes per address for them once idle (an entry is recomputed in about a
microsecond). ``shared_local`` lets the owner hand out its own (host, port)
tuple for a local address, so a cached entry holds no string of its own.
Remote addresses are handed out as one shared (host, port) tuple each (same
bound): the exchange layer keys its duplicate window by them for minutes.

Sends that would block are queued and flushed when the socket is writable.
With ``send_budget`` a call sends for at most that long and queues the rest
for the next loop turns: on loopback a ``sendto`` runs the receiver's side
too, often 100-200 us on a busy 2-core machine, and 80 of them in one
callback held every other callback (an NB API call) for tens of ms.
:class:`OneTimer` keeps a single loop timer for a sans-IO core's deadline.

Time: every ``now`` and deadline in meshfleet is POSIX seconds (``time.time()``),
so device clocks, CSMP CurrentTime, load times and timers share one base.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeAlias

log = logging.getLogger(__name__)

Addr: TypeAlias = tuple[str, int]
Received: TypeAlias = tuple[bytes, Addr, Addr]
"""(data, local, remote) of one received datagram."""
OnDatagrams: TypeAlias = Callable[[list[Received], float], None]

IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_FREEBIND = 78
_CMSG_SPACE = socket.CMSG_SPACE(20)
_IPV6 = socket.IPPROTO_IPV6
DEFAULT_RCVBUF = 8 * 1024 * 1024
MAX_DATAGRAM = 2048
"""Largest datagram we read (CSMP payloads stay near 1 KiB, the mesh MTU)."""
ADDRESS_CACHE = 16384
"""Entries of each address cache of an endpoint (packed local addresses and
their ancillary data with ``pktinfo``; shared remote tuples always)."""
_CLOCK_EVERY = 8
"""Sends between two clock reads of a time-bounded :meth:`UdpEndpoint.send`."""


def _set_buffer(sock: socket.socket, option: int, force: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)  # root: past rmem_max
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)


def open_socket(
    bind: Addr,
    *,
    pktinfo: bool = False,
    freebind: bool = False,
    rcvbuf: int = DEFAULT_RCVBUF,
    reuse_port: bool = False,
) -> socket.socket:
    """A non-blocking IPv6 UDP socket bound to ``bind``."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _set_buffer(sock, socket.SO_RCVBUF, 33, rcvbuf)  # 33: SO_RCVBUFFORCE
        _set_buffer(sock, socket.SO_SNDBUF, 32, rcvbuf)  # 32: SO_SNDBUFFORCE
        if pktinfo:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        if freebind:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        sock.bind(bind)
    except OSError:
        sock.close()
        raise
    return sock


class UdpEndpoint:
    """One UDP socket on the event loop, batched in and queued out."""

    def __init__(
        self,
        sock: socket.socket,
        on_datagrams: OnDatagrams,
        *,
        pktinfo: bool = False,
        batch: int = 256,
        loop: asyncio.AbstractEventLoop | None = None,
        shared_local: Callable[[Addr], Addr] | None = None,
        send_budget: float | None = None,
    ) -> None:
        self.sock = sock
        self.pktinfo = pktinfo
        self.local: Addr = sock.getsockname()[:2]
        self._on_datagrams = on_datagrams
        self._batch = batch
        self._loop = loop or asyncio.get_running_loop()
        self._backlog: deque[tuple[bytes, Addr, Addr]] = deque()
        # packed destination address (pktinfo) -> the local (host, port)
        self._local_of: dict[bytes, Addr] = {}
        # remote (host, port, flowinfo, scope) -> the shared (host, port)
        self._peers: dict[tuple[str, int, int, int], Addr] = {}
        # local address text -> the ancillary data (a one-item list holding
        # its IPV6_PKTINFO) that sends from it
        self._pktinfo: dict[str, list[tuple[int, int, bytes]]] = {}
        self._shared_local = shared_local
        self._send_budget = send_budget
        self._resume_queued = False
        self.sent = 0
        self.received = 0
        self.send_errors = 0
        self._loop.add_reader(sock.fileno(), self._on_readable)

    # -- receive ---------------------------------------------------------

    def _on_readable(self) -> None:
        batch: list[Received] = []
        try:
            if self.pktinfo:
                self._receive_pktinfo(batch)
            else:
                recvfrom, local = self.sock.recvfrom, self.local
                peers = self._peers
                for _ in range(self._batch):
                    data, remote = recvfrom(MAX_DATAGRAM)
                    peer = peers.get(remote) or self._remember_peer(remote)
                    batch.append((data, local, peer))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # e.g. ICMP port unreachable reported late
            log.debug("recvmsg on %s: %s", self.local, exc)
        if batch:
            self.received += len(batch)
            self._on_datagrams(batch, time.time())

    def _receive_pktinfo(self, batch: list[Received]) -> None:
        """Up to a batch of datagrams with their local address (pktinfo);
        the (host, port) of each local address is one shared tuple."""
        recvmsg = self.sock.recvmsg
        locals_, peers = self._local_of, self._peers
        for _ in range(self._batch):
            data, anc, _flags, remote = recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            dst = anc[0][2] if anc else b""  # in6_pktinfo: address, ifindex
            local = locals_.get(dst) or self._remember(dst)
            peer = peers.get(remote) or self._remember_peer(remote)
            batch.append((data, local, peer))

    def _remember_peer(self, remote: tuple[str, int, int, int]) -> Addr:
        """One shared (host, port) per remote address: exchange state keyed
        by it for EXCHANGE_LIFETIME then holds no tuple and string of its own
        per datagram."""
        peer = remote[:2]
        if len(self._peers) >= ADDRESS_CACHE:
            self._peers.clear()
        self._peers[remote] = peer
        return peer

    def _remember(self, raw: bytes) -> Addr:
        packed = raw[:16]
        host = socket.inet_ntop(socket.AF_INET6, packed) if len(packed) == 16 else "::"
        local = (host, self.local[1])
        if self._shared_local is not None:
            local = self._shared_local(local)
        if len(self._local_of) >= ADDRESS_CACHE:
            self._local_of.clear()
        self._local_of[raw] = local
        return local

    # -- send ------------------------------------------------------------

    def send(self, datagrams: Iterable[tuple[bytes, Addr, Addr]]) -> None:
        """Send (data, local, remote) datagrams, from ``local`` when pktinfo."""
        if self._backlog:
            self._backlog.extend(datagrams)
            return
        if self._send_budget is not None:
            self._backlog.extend(datagrams)
            self._drain_for_a_while()
            return
        if self.pktinfo and isinstance(datagrams, list):
            done = self._send_pktinfo(datagrams)
            if done < len(datagrams):
                self._backlog.extend(datagrams[done:])
                self._loop.add_writer(self.sock.fileno(), self._flush)
            return
        for i, item in enumerate(datagrams):
            if not self._send_one(*item):
                self._backlog.append(item)
                if isinstance(datagrams, list):
                    self._backlog.extend(datagrams[i + 1 :])
                    break
        if self._backlog:
            self._loop.add_writer(self.sock.fileno(), self._flush)

    def _send_pktinfo(self, datagrams: list[tuple[bytes, Addr, Addr]]) -> int:
        """:meth:`_send_one` for a list, in one loop (the answer path of a
        batch); returns how many were dealt with before one would block."""
        sendmsg = self.sock.sendmsg
        anc_of = self._pktinfo
        sent = 0
        try:
            for k, (data, local, remote) in enumerate(datagrams):
                host = local[0]
                if host == "::":
                    if not self._send_one(data, local, remote):
                        return k
                    continue
                anc = anc_of.get(host) or self._ancillary(host)
                try:
                    sendmsg([data], anc, 0, remote)
                except (BlockingIOError, InterruptedError):
                    return k
                except OSError as exc:
                    self._send_failed(exc, local, remote)
                else:
                    sent += 1
        finally:
            self.sent += sent
        return len(datagrams)

    def _ancillary(self, host: str) -> list[tuple[int, int, bytes]]:
        """The ancillary data that sends from ``host`` (kept; sendmsg only
        reads it)."""
        info = socket.inet_pton(socket.AF_INET6, host) + b"\0\0\0\0"
        if len(self._pktinfo) >= ADDRESS_CACHE:
            self._pktinfo.clear()
        anc = [(_IPV6, IPV6_PKTINFO, info)]
        self._pktinfo[host] = anc
        return anc

    def _send_one(self, data: bytes, local: Addr, remote: Addr) -> bool:
        try:
            if self.pktinfo and local[0] != "::":
                anc = self._pktinfo.get(local[0]) or self._ancillary(local[0])
                self.sock.sendmsg([data], anc, 0, remote)
            else:
                self.sock.sendto(data, remote)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._send_failed(exc, local, remote)
        else:
            self.sent += 1
        return True

    def _send_failed(self, exc: OSError, local: Addr, remote: Addr) -> None:
        self.send_errors += 1
        if exc.errno not in (errno.ECONNREFUSED, errno.ENETUNREACH):
            log.debug("send %s -> %s failed: %s", local, remote, exc)

    def _flush(self) -> None:
        """The socket is writable again: send the backlog."""
        self._loop.remove_writer(self.sock.fileno())
        if self._send_budget is not None:
            self._drain_for_a_while()
            return
        while self._backlog:
            if not self._send_one(*self._backlog[0]):
                self._loop.add_writer(self.sock.fileno(), self._flush)
                return
            self._backlog.popleft()

    def _drain_for_a_while(self) -> None:
        """Send from the backlog for at most ``send_budget`` seconds; the
        rest on a later loop turn, or once writable if the socket is full."""
        self._resume_queued = False
        if self.sock.fileno() < 0:  # closed meanwhile
            self._backlog.clear()
            return
        backlog, send_one = self._backlog, self._send_one
        assert self._send_budget is not None
        deadline = time.perf_counter() + self._send_budget
        count = 0
        while backlog:
            if not send_one(*backlog[0]):
                self._loop.add_writer(self.sock.fileno(), self._flush)
                return
            backlog.popleft()
            count += 1
            if count % _CLOCK_EVERY == 0 and time.perf_counter() >= deadline:
                break
        if backlog and not self._resume_queued:
            self._resume_queued = True
            self._loop.call_soon(self._drain_for_a_while)

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    # -- multicast -------------------------------------------------------

    def join_group(self, group: str, ifindex: int = 0) -> None:
        """Join an IPv6 multicast group on an interface (0: the default)."""
        mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", ifindex)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)

    def leave_group(self, group: str, ifindex: int = 0) -> None:
        mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", ifindex)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, mreq)

    def set_multicast_out(self, ifindex: int, hops: int = 8, loop: bool = True) -> None:
        """Interface, hop limit and loopback of multicast we send."""
        s = self.sock
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_writer(self.sock.fileno())
            self.sock.close()


class OneTimer:
    """A single loop timer for a sans-IO core: arm(deadline) keeps the earliest."""

    def __init__(
        self,
        callback: Callable[[], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._callback = callback
        self._loop = loop or asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._when = float("inf")

    def arm(self, deadline: float | None) -> None:
        """Fire at ``deadline`` (POSIX seconds) unless armed earlier already."""
        if deadline is None or deadline >= self._when:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._when = deadline
        delay = max(0.0, deadline - time.time())
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._when = float("inf")
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._when = float("inf")
