"""The fleet runtime: thousands of sans-IO devices behind one socket and one timer.

Layer ``fleet`` (DESIGN.md, "fleet process"): the asyncio edge that connects
the CSMP devices of :mod:`emulator.node` to the network (CSMP.md "Transport",
"Group flows").

Theory of operation:

- Receive: :class:`~emulator.net.udp.UdpEndpoint` hands over a batch of
  ``(data, local, remote)``; the local address picks the device (a dict), the
  link model may drop or delay the datagram, the one
  :class:`~emulator.coap.exchange.ExchangeLayer` of the fleet turns it into a
  request (answered by ``Device.handle``) or a response to a device's own
  registration (``on_registration_answer``). A datagram to a multicast group
  (or to the relay port) is decoded once and fanned out to the members of
  the group, each through its own link; devices never answer it directly.
- Send: everything the batch produced is flushed once, from each device's own
  address (IPV6_PKTINFO), after the link model had its say.
- Time: every device deadline, delayed datagram and the exchange layer's
  deadline live in one :class:`~emulator.fleet.timerwheel.TimerWheel`-driven
  tick armed through one :class:`~emulator.net.udp.OneTimer`: no task or
  timer per device or message.
- Registration: a device's trickle timer may fire again before the NMS
  answered its previous registration POST (a busy head-end). The device keeps
  its trickle state (it advances as usual), but the runtime sends no new POST
  while the device's previous registration exchange from the same boot is
  still pending in the exchange layer: that CON is retransmitted by the CoAP
  rules, its answer registers the device, and if it fails the device's
  ``on_registration_failed`` runs and the next trickle firing sends anew.
  Such a skipped firing counts as ``registrations_deferred``. One exchange in
  flight per device: 10,000 devices make 10,000 registrations, not 13,000.
- Start: the control API's module (aiohttp, ~250 ms) is imported first, then
  the devices are built and powered on (addresses formatted by ``inet_ntop``,
  slot images resolved once per mix), the sockets opened, the timer armed and
  the control API served: nothing slow runs between power-on and the loop.
- Memory: per device the runtime keeps its local address tuple (shared with
  the UDP edge's bounded caches and the exchange state), an index into
  shared group-key tuples, a timer-wheel entry; the EUI-64 index is built
  only when asked for (``local_address``, ``power_cycle``).
- Addressing: ``prefix`` (one ``[::]`` socket, local route for the prefix) or
  ``loopback-ports`` (device i on ``[::1]:port_base+i``), chosen by ``auto``
  from the privileges we have (:mod:`emulator.fleet.addressing`).

Use in-process (tests, demo, head-end tests)::

    fleet = Fleet(parse_config({"fleet": {"devices": 50}}))
    await fleet.start()
    ...  # fleet.devices[eui64].registered, fleet.stats["registrations_ok"]
    await fleet.stop()
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emulator.coap.exchange import (
    Addr,
    Datagram,
    ExchangeLayer,
    IncomingRequest,
    IncomingResponse,
    RequestFailed,
    TransportTuning,
)
from emulator.coap.message import (
    Code,
    Message,
    RequestTail,
    Type,
    ack_head,
    parse_tail,
    request_options,
)
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import GROUP_CONFIG, T, decode_as
from emulator.csmp.tlv import CodecError, iter_tlvs
from emulator.firmware.blockstore import BlockStore
from emulator.fleet import persist
from emulator.fleet.addressing import LocalRoute, group_address, is_root
from emulator.fleet.build import (
    Blueprint,
    ImageCache,
    blueprint,
    load_nms_key,
    make_profile,
    new_device,
)
from emulator.fleet.config import FleetConfig, parse_address
from emulator.fleet.faults import DOWN, UP, DeviceKey, FaultSchedule, LinkModel
from emulator.fleet.inventory import Planned, plan_fleet
from emulator.fleet.sharding import take
from emulator.fleet.timerwheel import TimerWheel
from emulator.net.udp import OneTimer, UdpEndpoint, open_socket
from emulator.node.device import (
    Device,
    GroupBlock,
    deliver_group_block,
    group_block,
    unicast_block,
)
from emulator.node.io import Request, Response, Send
from emulator.node.profile import DeviceFaults, UploadState

logger = logging.getLogger(__name__)

GROUP_FIRMWARE = 2
_IMAGE_BLOCK = T.IMAGE_BLOCK
_CON, _NON = Type.CON, Type.NON
#: Uri-Path options of the paths devices send to (``r``, ``c``, redirects);
#: shared by every message, never modified.
_PATH_OPTIONS: dict[str, list[tuple[int, bytes]]] = {}


class _Delayed:
    """A datagram held back by a link: inbound for a device, or outbound."""

    __slots__ = ("device", "datagram", "request", "inbound")

    def __init__(
        self,
        device: int,
        datagram: Datagram | None,
        request: Request | None,
        inbound: bool,
    ) -> None:
        self.device = device
        self.datagram = datagram
        self.request = request
        self.inbound = inbound


class Fleet:
    """Every device of one shard of the fleet, on the network."""

    def __init__(self, config: FleetConfig, *, state_dir: Path | None = None) -> None:
        self.config = config
        self.state_dir = state_dir or (
            Path(config.state_dir) if config.state_dir else None
        )
        self.store = BlockStore()
        self.exchange = ExchangeLayer(
            TransportTuning(ack_timeout=config.registration.ack_timeout),
            seed=config.seed,
        )
        self.stats: Counter[str] = Counter()
        """Fleet counters (registrations, reports, blocks, reboots, ...)."""
        self.requests: Counter[tuple[str, str]] = Counter()
        """CoAP requests handled, by (method, response class)."""
        self.planned: list[Planned] = take(
            plan_fleet(config), lambda p: p.eui64, config.shard
        )
        self.devices: dict[int, Device] = {}
        """EUI-64 -> device (this shard's)."""
        self._index_of: dict[int, int] | None = None
        self._devs: list[Device] = []
        self._local_of: list[Addr] = []
        self._by_local: dict[Addr, int] = {}
        self._reg_handles: dict[int, int] = {}
        """Exchange handle of a registration POST in flight -> device."""
        self._reg_pending: dict[int, tuple[int, float]] = {}
        """Device -> (handle, its ``booted_at`` at the send) of its newest
        registration POST in flight (see "Registration" above)."""
        self._groups: list[tuple[tuple[int, int], ...]] = []
        """Device -> its (group type, id) keys (shared tuples, see _group_keys)."""
        self._members: dict[tuple[int, int], set[int]] = {}
        self._group_addrs: dict[str, int] = {}
        self._wheel: TimerWheel[int] = TimerWheel()
        self._delayed: dict[int, _Delayed] = {}
        self._delay_wheel: TimerWheel[int] = TimerWheel()
        self._delay_seq = 0
        keys = [DeviceKey(p.eui64, p.mix.name) for p in self.planned]
        self.link = LinkModel(config.seed, keys)
        self.link.set_rules(config.faults.link)
        self._device_keys = keys
        self.device_faults = FaultSchedule(config.faults.device)
        self.fault_counts: Counter[str] = Counter()
        self.nms: Addr = config.nms
        self.mode = ""
        """Addressing mode in use: ``prefix`` or ``loopback-ports``."""
        self.multicast_mode = ""
        self.relay_address: Addr | None = None
        self.port = config.port
        self.started_at = 0.0
        self._route: LocalRoute | None = None
        self._main: UdpEndpoint | None = None
        self._relay: UdpEndpoint | None = None
        self._endpoints: dict[Addr, UdpEndpoint] = {}
        self._ifindex = 0
        self._timer: OneTimer | None = None
        self._snapshotter: persist.Snapshotter | None = None
        self._control: Any = None
        self._running = False
        self._stopped = False

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Build (or restore) the devices, open sockets, power them on."""
        if self._running:
            return
        loop = asyncio.get_running_loop()
        control = self._control_module()  # before the devices' clocks start
        self.started_at = now = time.time()
        self._choose_mode()
        self._build_devices(now)
        try:
            self._open_sockets(loop)
            self._timer = OneTimer(self._on_tick, loop)
            self._running = True
            self._rebuild_group_index()
            if self.state_dir is not None:
                self._snapshotter = persist.Snapshotter(self, self.state_dir)
                self._snapshotter.start(loop)
            self._arm()
            await self._start_control(control)
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "fleet up: %d device(s), %s addressing, multicast %s, NMS [%s]:%d",
            len(self._devs),
            self.mode,
            self.multicast_mode,
            *self.nms,
        )

    async def stop(self) -> None:
        """Final snapshot, close sockets, remove the route (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
        if self._snapshotter is not None:
            await self._snapshotter.stop()
        if self._control is not None:
            await self._control.stop()
            self._control = None
        for ep in {id(e): e for e in self._all_endpoints()}.values():
            ep.close()
        self._endpoints.clear()
        self._main = self._relay = None
        if self._route is not None:
            self._route.remove()
        logger.info("fleet stopped")

    def _all_endpoints(self) -> Iterable[UdpEndpoint]:
        yield from self._endpoints.values()
        if self._main is not None:
            yield self._main
        if self._relay is not None:
            yield self._relay

    # ---------------------------------------------------------- addressing

    def _choose_mode(self) -> None:
        mode = self.config.addressing
        if mode in ("auto", "prefix"):
            route = LocalRoute(self.config.prefix, self.config.interface)
            if route.install():
                self._route, self.mode = route, "prefix"
            elif mode == "prefix":
                logger.warning("prefix addressing without the local route")
                self.mode = "prefix"
            else:
                self.mode = "loopback-ports"
                logger.warning(
                    "no local route for %s (%s): falling back to loopback-ports, "
                    "device i on [::1]:%d+i",
                    self.config.prefix,
                    "not root" if not is_root() else "ip failed",
                    self.config.port_base,
                )
        else:
            self.mode = mode
        mc = self.config.multicast.mode
        if mc == "auto":
            mc = "join" if self.mode == "prefix" else "relay"
        self.multicast_mode = mc

    def _open_sockets(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._on_datagrams
        if self.mode == "prefix":
            sock = open_socket(("::", self.config.port), pktinfo=True, freebind=True)
            self._main = UdpEndpoint(
                sock, batch, pktinfo=True, loop=loop, shared_local=self._shared_local
            )
            self.port = self._main.local[1]
            self._local_of = [(p.address, self.port) for p in self.planned]
        else:
            base = self.config.port_base
            self._local_of = [("::1", base + p.index) for p in self.planned]
            for local in self._local_of:
                sock = open_socket(local, rcvbuf=256 * 1024)
                self._endpoints[local] = UdpEndpoint(sock, batch, loop=loop)
        self._by_local = {local: i for i, local in enumerate(self._local_of)}
        self._open_multicast(loop)

    def _open_multicast(self, loop: asyncio.AbstractEventLoop) -> None:
        mc = self.config.multicast
        if self.multicast_mode == "relay":
            host, port = parse_address(mc.relay, allow_zero=True)
            sock = open_socket((host, port))
            self._relay = UdpEndpoint(sock, self._on_datagrams, loop=loop)
            self.relay_address = self._relay.local
        elif self.multicast_mode == "join":
            name = mc.interface or self.config.interface
            try:
                self._ifindex = socket.if_nametoindex(name)
            except OSError:
                logger.warning("no interface %r for multicast joins", name)
            if self._main is None:
                sock = open_socket(("::", self.config.port), pktinfo=True)
                self._main = UdpEndpoint(
                    sock, self._on_datagrams, pktinfo=True, loop=loop
                )

    @property
    def _index(self) -> dict[int, int]:
        """EUI-64 -> device index, built on first use (control API, tests):
        ~60 bytes a device the data path never needs."""
        if self._index_of is None:
            self._index_of = {p.eui64: i for i, p in enumerate(self.planned)}
        return self._index_of

    def _shared_local(self, local: Addr) -> Addr:
        """The device's own tuple for ``local`` (the endpoint's caches keep it)."""
        i = self._by_local.get(local)
        return local if i is None else self._local_of[i]

    def local_address(self, eui64: int) -> Addr:
        """Where the device ``eui64`` listens (and sends from)."""
        return self._local_of[self._index[eui64]]

    # ------------------------------------------------------------- devices

    def _build_devices(self, now: float) -> None:
        config = self.config
        nms_key = load_nms_key(config.security.nms_certificate)
        profiles = {m.name: make_profile(config, m, nms_key) for m in config.hardware}
        images = ImageCache(self.store)
        restored = persist.load_state(self.state_dir, self.store)
        jitter = random.Random(f"power:{config.seed}")
        for p in self.planned:
            bp = blueprint(config, p, profiles[p.mix.name], images)
            at = now + jitter.uniform(0.0, config.power_on_jitter)
            snap = restored.get(p.eui64)
            device = self._restore(bp, snap, at) if snap is not None else None
            if device is None:
                device = new_device(bp, self.store)
                device.power_on(at)
            self._devs.append(device)
            self.devices[p.eui64] = device
            self._wheel.schedule(len(self._devs) - 1, device.next_deadline())
        self._groups = [()] * len(self._devs)
        if restored:
            logger.info("restored %d device(s) from %s", len(restored), self.state_dir)

    def _restore(self, bp: Blueprint, snap: Any, at: float) -> Device | None:
        try:
            return Device.restore(
                bp.identity, bp.profile, self.store, snap, seed=bp.seed, now=at
            )
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning(
                "device %016x: bad snapshot (%s); starting clean",
                bp.identity.eui64,
                exc,
            )
            self.stats["restore_failed"] += 1
            return None

    def _rebuild_group_index(self) -> None:
        for i in range(len(self._devs)):
            self._refresh_groups(i)

    def _refresh_groups(self, i: int) -> None:
        groups = _group_keys(self._devs[i].group_ids)
        old = self._groups[i]
        if groups == old:
            return
        for key in old:
            self._members.get(key, set()).discard(i)
        for key in groups:
            self._members.setdefault(key, set()).add(i)
            if key[0] == GROUP_FIRMWARE:
                self._join(key[1])
        self._groups[i] = groups

    def group_address(self, group_id: int) -> str:
        """The multicast address of firmware group ``group_id``."""
        mc = self.config.multicast
        return group_address(mc.base, group_id, dict(mc.groups))

    def _join(self, group_id: int) -> None:
        if self.multicast_mode != "join" or self._main is None:
            return
        address = self.group_address(group_id)
        if address in self._group_addrs:
            return
        self._group_addrs[address] = group_id
        try:
            self._main.join_group(address, self._ifindex)
            logger.info("joined %s (firmware group %d)", address, group_id)
        except OSError as exc:
            logger.warning("cannot join %s: %s", address, exc)

    # ------------------------------------------------------------- receive

    def _on_datagrams(self, batch: list[tuple[bytes, Addr, Addr]], now: float) -> None:
        by_local, local_of = self._by_local, self._local_of
        link = self.link if self.link.active else None
        for data, local, remote in batch:
            i = by_local.get(local)
            if i is None:
                self._on_group_datagram(data, local, remote, now)
                continue
            local = local_of[i]  # the shared tuple: exchange state keys keep it
            if link is not None:
                fate = link.decide(i, DOWN, now - self.started_at)
                if fate is not None and self._hold(
                    i, fate, Datagram(data, local, remote), None, now
                ):
                    continue
            if not self._fast_request(i, data, local, remote, now):
                self._receive(i, data, local, remote, now)
        self._flush(now)
        self._arm()  # requests move device deadlines (loads, async answers)

    def _fast_request(
        self, i: int, data: bytes, local: Addr, remote: Addr, now: float
    ) -> bool:
        """Serve a plain CON/NON GET or POST to device ``i`` (the fast path).

        The same as :meth:`_receive` + :meth:`_on_request` for such a request,
        without Message objects: the header is read here, the options through
        a per-shape memo, the exchange layer still checks duplicates
        (:meth:`ExchangeLayer.accept_request`) and caches the piggybacked ACK,
        which reuses the request's header bytes. False for anything else
        (responses, empty messages, other methods, malformed datagrams): the
        caller takes the generic path, which also explains refusals.
        """
        end = len(data)
        if end < 4:
            return False
        first, code = data[0], data[1]
        tkl = first & 0x0F
        pos = 4 + tkl
        if first & 0xE0 != 0x40 or tkl > 8 or pos > end or not 0 < code < 3:
            return False
        con = not first & 0x10
        plan: GroupBlock | None = None
        tail = data[pos:]
        if end - pos <= _SHAPE_MAX:
            shape = _SHAPES.get(tail, _MISSING)
            if shape is _MISSING:
                shape = _SHAPES[tail] = _shape(data, pos)
                if len(_SHAPES) > _SHAPES_LIMIT:
                    _SHAPES.clear()
            if shape is None:
                return False
            request = shape[2 * code - 2 + con]
        elif code == _POST:
            plan = _BLOCKS.get(tail, _MISSING)
            if plan is _MISSING:
                plan = _BLOCKS[tail] = _block_plan(tail)
                if len(_BLOCKS) > _BLOCKS_LIMIT:
                    _BLOCKS.clear()
            if plan is None:
                parsed = parse_tail(data, pos)
                if parsed is None:
                    return False
                request = Request(code, parsed[0], parsed[1], parsed[2], con, False)
            else:
                request = plan.request
        else:
            parsed = parse_tail(data, pos)
            if parsed is None:
                return False
            request = Request(code, parsed[0], parsed[1], parsed[2], con, False)
        key = self.exchange.accept_request(
            local, remote, data[2] << 8 | data[3], con, now
        )
        if key is None:
            return True  # a duplicate, answered from the exchange layer's cache
        if plan is not None:
            response = self._unicast_block(i, plan, con, now)
        elif code == _GET and con and not self._devs[i].booting:
            response = self._devs[i].handle(request, now)  # a read: no deadline moves
        else:
            response = self._deliver(i, request, now)
        if response is None:
            self.requests[_NO_ANSWER[code]] += 1
            if not self._devs[i].online(now):  # off or booting: never received
                self.exchange.forget_request(key)
            return True
        self.requests[_ANSWERED[code][response.code >> 5]] += 1
        if con:
            head = ack_head(data, response.code)
            self.exchange.answer_confirmable(key, head, response.payload)
        else:
            msg = Message(Type.NON, code, key[2], data[4:pos])
            event = IncomingRequest(msg, local, remote)
            self.exchange.respond(event, response.code, response.payload, now=now)
        return True

    def _unicast_block(
        self, i: int, plan: GroupBlock, con: bool, now: float
    ) -> Response | None:
        """Device ``i``'s answer to a unicast ImageBlock POST (``plan``): the
        bulk path of :meth:`_deliver_block` with one member, else
        :meth:`_deliver` (the answer is the same either way: 2.01 without
        payload for a CON, none for a NON)."""
        if not self._deliver_block([i], plan, now):
            return _CREATED if con else None
        return self._deliver(i, plan.request._replace(confirmable=con), now)

    def _hold(
        self,
        i: int,
        fate: tuple[float, ...],
        datagram: Datagram | None,
        request: Request | None,
        now: float,
        inbound: bool = True,
    ) -> bool:
        """Apply a link decision; True when the datagram is not delivered now."""
        if fate == (0.0,):
            return False
        for delay in fate:
            self._delay_seq += 1
            self._delayed[self._delay_seq] = _Delayed(i, datagram, request, inbound)
            self._delay_wheel.schedule(self._delay_seq, now + delay)
        return True

    def _receive(
        self, i: int, data: bytes, local: Addr, remote: Addr, now: float
    ) -> None:
        answer = self.exchange.accept_response(data, local, remote)
        if answer is not None:  # a piggybacked answer (registration): fast path
            self._on_answer(*answer, now)
            return
        event = self.exchange.receive_datagram(data, local, remote, now)
        if event is None:
            return
        if type(event) is IncomingRequest:
            self._on_request(i, event, now)
        elif type(event) is IncomingResponse:
            self._on_response(event, now)
        elif type(event) is RequestFailed:
            self._on_failed(event, now)

    def _on_request(self, i: int, event: IncomingRequest, now: float) -> None:
        msg = event.message
        request = Request(
            msg.code,
            tuple(msg.uri_path),
            tuple(msg.uri_query),
            msg.payload,
            msg.type == _CON,
            False,
        )
        response = self._deliver(i, request, now)
        method = _METHODS.get(msg.code, "other")
        if response is None:
            self.requests[(method, "none")] += 1
            if not self._devs[i].online(now):  # off or booting: never received
                self.exchange.forget_request((event.local, event.remote, msg.mid))
            return
        self.requests[(method, _CLASSES.get(response.code >> 5, "other"))] += 1
        self.exchange.respond(event, response.code, response.payload, now=now)

    def _deliver(self, i: int, request: Request, now: float) -> Response | None:
        """Hand ``request`` to device ``i``; keep the books; reschedule it."""
        device = self._devs[i]
        if request.method != Code.POST:
            response = device.handle(request, now)
        else:
            fw = device.firmware
            before, state = fw.upload, fw.upload_state()
            bits = before.bits if before is not None else 0
            groups = device.group_ids
            response = device.handle(request, now)
            self._count_post(device, request, before, bits, state)
            if device.group_ids != groups:
                self._refresh_groups(i)
        self._wheel.schedule(i, device.next_deadline())
        return response

    def _count_post(
        self,
        device: Device,
        request: Request,
        before: Any,
        bits: int,
        state: UploadState,
    ) -> None:
        after = device.firmware.upload
        if after is None:
            return
        new = after.bits & ~bits if after is before else after.bits
        if new:
            self.stats["blocks_received"] += new.bit_count()
        elif after is before and _has_image_block(request.payload):
            self.stats["duplicate_blocks"] += 1
        if after.state is UploadState.COMPLETE and (
            after is not before or state is not UploadState.COMPLETE
        ):
            self.stats["uploads_completed"] += 1

    def _on_response(self, event: IncomingResponse, now: float) -> None:
        self._on_answer(event.handle, event.message.code, event.message.payload, now)

    def _on_answer(self, handle: int, code: int, payload: bytes, now: float) -> None:
        """The answer to the request ``handle`` (a registration's, if any)."""
        i = self._registration_done(handle)
        if i is None:
            return
        device = self._devs[i]
        device.on_registration_answer(code, payload, now)
        if device.registered:
            self.stats["registrations_ok"] += 1
        else:
            self.stats["registrations_refused"] += 1
        self._refresh_groups(i)
        self._wheel.schedule(i, device.next_deadline())

    def _registration_done(self, handle: int) -> int | None:
        """The device whose registration exchange ``handle`` ended, if any."""
        i = self._reg_handles.pop(handle, None)
        if i is not None:
            pending = self._reg_pending.get(i)
            if pending is not None and pending[0] == handle:
                del self._reg_pending[i]
            if not self._reg_handles:  # do not keep the tables of a burst
                self._reg_handles, self._reg_pending = {}, {}
        return i

    def _registration_in_flight(self, i: int) -> bool:
        """Whether device ``i`` has a registration POST in flight from its
        current boot (a reboot forgets the exchanges of the previous one)."""
        pending = self._reg_pending.get(i)
        return pending is not None and pending[1] == self._devs[i].booted_at

    def _on_failed(self, event: RequestFailed, now: float) -> None:
        i = self._registration_done(event.handle)
        if i is None:
            return
        self.stats["registrations_failed"] += 1
        device = self._devs[i]
        device.on_registration_failed(now)
        self._wheel.schedule(i, device.next_deadline())

    # ----------------------------------------------------------- multicast

    def _on_group_datagram(
        self, data: bytes, local: Addr, remote: Addr, now: float
    ) -> None:
        event = self.exchange.receive_datagram(data, local, remote, now)
        if type(event) is not IncomingRequest:
            return
        msg = event.message
        members = self._members_for(local, msg.payload)
        self.stats["multicast_received"] += 1
        if not members:
            return
        request = Request(
            msg.code,
            tuple(msg.uri_path),
            tuple(msg.uri_query),
            msg.payload,
            False,
            True,
        )
        ordered = sorted(members)
        if self.link.active:
            ordered, held = self.link.split(ordered, DOWN, now - self.started_at)
            for i, fate in held:
                self._hold(i, fate, None, request, now)
        self.stats["multicast_delivered"] += len(ordered)
        plan = group_block(request)
        if plan is not None:
            ordered = self._deliver_block(ordered, plan, now)
        for i in ordered:
            self._deliver(i, request, now)

    def _deliver_block(
        self, members: list[int], plan: GroupBlock, now: float
    ) -> list[int]:
        """The bulk path of a multicast ImageBlock (the same books as
        :meth:`_deliver` would keep); returns the members it left to it."""
        done = deliver_group_block(self._devs, members, plan, now)
        stats = self.stats
        if done.received:
            stats["blocks_received"] += done.received
        if done.duplicates:
            stats["duplicate_blocks"] += done.duplicates
        if done.completed:
            stats["uploads_completed"] += done.completed
        for i in done.moved:
            self._wheel.schedule(i, self._devs[i].next_deadline())
        return done.generic

    def _members_for(self, local: Addr, payload: bytes) -> set[int]:
        group_id = self._group_addrs.get(local[0])
        if group_id is not None:
            return self._members.get((GROUP_FIRMWARE, group_id), set())
        match = _group_match(payload)
        if match is None:
            return set()
        return self._members.get(match, set())

    # ---------------------------------------------------------------- send

    def _send(self, i: int, send: Send, now: float) -> None:
        if send.kind == "register" and self._registration_in_flight(i):
            self.stats["registrations_deferred"] += 1
            return  # the CON in flight is retransmitted; see the docstring
        local = self._local_of[i]
        remote = send.target or self.nms
        options = _PATH_OPTIONS.get(send.path)
        if options is None:
            options = request_options(send.path)
            if len(_PATH_OPTIONS) < 64:
                _PATH_OPTIONS[send.path] = options
        kind = _CON if send.confirmable else _NON
        message = Message(kind, _POST, options=options, payload=send.payload)
        if send.kind == "register":
            handle = self.exchange.request(local, remote, message, now)
            self._reg_handles[handle] = i
            self._reg_pending[i] = (handle, self._devs[i].booted_at)
            self.stats["registrations_sent"] += 1
        elif send.confirmable:
            self.exchange.request(local, remote, message, now)
            self.stats[f"{send.kind}_sent"] += 1
        else:
            self.exchange.send_non(local, remote, message, now)
            self.stats[
                f"{send.kind}s_sent" if send.kind == "report" else f"{send.kind}_sent"
            ] += 1

    def _flush(self, now: float) -> None:
        out = self.exchange.datagrams_to_send()
        if not out:
            return
        if self.link.active:
            out = self._link_out(out, now)
        if self._main is not None and not self._endpoints:
            self._main.send(out)
            return
        for datagram in out:
            ep = self._endpoints.get(datagram.local) or self._main or self._relay
            if ep is not None:
                ep.send([datagram])

    def _link_out(self, out: list[Datagram], now: float) -> list[Datagram]:
        keep = []
        elapsed = now - self.started_at
        for datagram in out:
            i = self._by_local.get(datagram.local)
            fate = None if i is None else self.link.decide(i, UP, elapsed)
            if fate is None or not self._hold(
                i or 0, fate, datagram, None, now, inbound=False
            ):
                keep.append(datagram)
        return keep

    # --------------------------------------------------------------- timer

    def _on_tick(self) -> None:
        if not self._running:
            return
        now = time.time()
        try:
            self._run_due(now)
        finally:
            self._flush(now)
            self._arm()

    def _run_due(self, now: float) -> None:
        for event in self.exchange.handle_timer(now):
            if type(event) is RequestFailed:
                self._on_failed(event, now)
        for key in self._delay_wheel.pop_due(now):
            self._release(self._delayed.pop(key), now)
        self._apply_device_faults(now)
        for i in self._wheel.pop_due(now):
            self._timer_device(i, now)

    def _timer_device(self, i: int, now: float) -> None:
        device = self._devs[i]
        run, online = device.firmware.run, device.online(now)
        for send in device.on_timer(now):
            self._send(i, send, now)
        if online and device.booting:  # not online(now): boot_time may be 0
            self.stats["reboots"] += 1
            if device.firmware.run is not run:
                self.stats["reloads"] += 1
        self._wheel.schedule(i, device.next_deadline())

    def _release(self, item: _Delayed, now: float) -> None:
        if not item.inbound:
            assert item.datagram is not None
            ep = self._endpoints.get(item.datagram.local) or self._main
            if ep is not None:
                ep.send([item.datagram])
        elif item.request is not None:
            self._deliver(item.device, item.request, now)
        elif item.datagram is not None:
            self._receive(item.device, *item.datagram, now)

    def _arm(self) -> None:
        if self._timer is None or not self._running:
            return
        times = [
            t
            for t in (
                self._wheel.next_deadline(),
                self._delay_wheel.next_deadline(),
                self.exchange.get_timer(),
                self._fault_deadline(),
            )
            if t is not None
        ]
        if times:
            self._timer.arm(min(times))

    # -------------------------------------------------------------- faults

    def _fault_deadline(self) -> float | None:
        t = self.device_faults.next_time()
        return None if t is None else self.started_at + t

    def _apply_device_faults(self, now: float) -> None:
        from emulator.fleet.faults import select_devices

        for action in self.device_faults.due(now - self.started_at):
            rule = self.device_faults.rules[action.rule]
            chosen = select_devices(
                rule, action.rule, self.config.seed, self._device_keys
            )
            for i in chosen:
                self._fault_device(i, rule.kind, rule, action.clear, now)
            if not action.clear:
                self.fault_counts[rule.kind] += len(chosen)

    def _fault_device(
        self, i: int, kind: str, rule: Any, clear: bool, now: float
    ) -> None:
        device = self._devs[i]
        if kind in ("power_cycle", "reboot_loop"):
            self._power_cycle(i, now)
            return
        faults = device.faults or DeviceFaults()
        if kind == "refuse_transfer":
            faults.refuse_transfer_code = None if clear else rule.code
        elif kind == "flash_error":
            faults.flash_write_error_rate = 0.0 if clear else rule.rate
        elif kind == "boot_fail":
            faults.fail_boot = not clear
        device.faults = faults

    def set_link_rules(self, rules: Iterable[Any]) -> None:
        """Replace the link rules at runtime (control API)."""
        self.link.set_rules(rules)

    # ------------------------------------------------------------- control

    def _control_module(self) -> Any:
        """The control API's module when one is configured (aiohttp: ~250 ms
        to import, an SSL context included): imported before the devices are
        powered on, so that it does not hold up their first timers. (Not in a
        worker thread: a busy loop starves an importing thread of the GIL.)"""
        if not self.config.metrics_port:
            return None
        return importlib.import_module("emulator.fleet.control")

    async def _start_control(self, control: Any) -> None:
        if control is None:
            return
        self._control = control.ControlServer(self)
        await self._control.start(self.config.metrics_host, self.config.metrics_port)

    def metrics_collector(self) -> Any:
        """A Prometheus collector of this fleet (register it yourself)."""
        from emulator.fleet.metrics import FleetCollector

        return FleetCollector(self)

    def snapshot_now(self) -> dict[int, Any]:
        """Every device's durable state (on the loop thread)."""
        return {
            p.eui64: d.snapshot() for p, d in zip(self.planned, self._devs, strict=True)
        }

    def power_cycle(self, eui64: int) -> None:
        """Power cycle one device now (tests, control API)."""
        self._power_cycle(self._index[eui64], time.time())
        self._arm()

    def _power_cycle(self, i: int, now: float) -> None:
        """Device ``i`` loses power and boots: a reboot (as a RebootRequest
        or a load, counted in :meth:`_timer_device`, which cannot see this one:
        the device is offline from here on)."""
        device = self._devs[i]
        device.power_cycle(now)
        self.stats["reboots"] += 1
        self._wheel.schedule(i, device.next_deadline())

    def __repr__(self) -> str:
        return f"<Fleet {len(self._devs)} devices {self.mode or 'not started'}>"


_METHODS: dict[int, str] = {
    Code.GET: "GET",
    Code.POST: "POST",
    Code.PUT: "PUT",
    Code.DELETE: "DELETE",
}
_CLASSES: dict[int, str] = {2: "2xx", 4: "4xx", 5: "5xx"}
#: Counter keys of the fast path: method code -> key without answer, and
#: method code -> response class -> key (the same keys as _on_request's).
_NO_ANSWER = {c: (m, "none") for c, m in _METHODS.items()}
_ANSWERED = {
    c: {k: (m, _CLASSES.get(k, "other")) for k in range(8)} for c, m in _METHODS.items()
}
#: Options and payload of short requests -> their Requests by method and
#: type (GET /c?q=75 looks the same for every device and every request but
#: for mid and token), None when the generic path must decode them.
_SHAPES: dict[bytes, tuple[Request, ...] | None] = {}
_SHAPE_MAX = 96
_SHAPES_LIMIT = 4096
#: Options and payload of longer POSTs -> the decoded unicast ImageBlock
#: (None: not one). The head-end's fill-in sends block n of an image to many
#: members with the same bytes after the token: decoded once, not per member.
_BLOCKS: dict[bytes, GroupBlock | None] = {}
_BLOCKS_LIMIT = 512
_MISSING: Any = object()
_GET, _POST = Code.GET, Code.POST
_CREATED = Response(Code.CREATED)


def _shape(data: bytes, pos: int) -> tuple[Request, ...] | None:
    """The read-only Requests of a request tail: index ``2 * code - 2 + con``
    for (GET, NON), (GET, CON), (POST, NON), (POST, CON)."""
    parsed: RequestTail | None = parse_tail(data, pos)
    if parsed is None:
        return None
    path, query, payload = parsed
    return tuple(
        Request(code, path, query, payload, con, False)
        for code in (Code.GET, Code.POST)
        for con in (False, True)
    )


def _group_keys(ids: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """``sorted(device.groups.items())`` from ``device.group_ids``, one shared
    tuple per distinct value (a fleet has a few groups, not one per device)."""
    keys = _GROUP_KEYS.get(ids)
    if keys is None:
        config, firmware = ids
        found = [(GROUP_CONFIG, config), (GROUP_FIRMWARE, firmware)]
        keys = tuple((t, g) for t, g in found if g)
        if len(_GROUP_KEYS) >= 4096:
            _GROUP_KEYS.clear()
        _GROUP_KEYS[ids] = keys
    return keys


_GROUP_KEYS: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {(0, 0): ()}


def _block_plan(tail: bytes) -> GroupBlock | None:
    """The unicast ImageBlock plan of a POST's tail (options and payload),
    its request a NON (the plan does not depend on the type), or None."""
    parsed = parse_tail(tail, 0)
    if parsed is None:
        return None
    return unicast_block(Request(_POST, *parsed, False, False))


def _group_match(payload: bytes) -> tuple[int, int] | None:
    """(type, id) of the GroupMatch TLV of a payload (relay mode), or None."""
    try:
        for tlv in iter_tlvs(payload):
            if tlv.id == (T.GROUP_MATCH, 0):
                group = decode_as(tlv, pb.Group)
                return group.type, group.id
    except CodecError:
        return None
    return None


def _has_image_block(payload: bytes) -> bool:
    try:
        return any(t.id == (_IMAGE_BLOCK, 0) for t in iter_tlvs(payload))
    except CodecError:
        return False
