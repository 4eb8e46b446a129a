"""An in-memory wire between a head-end core and real emulated devices.

Test helper of layer ``headend`` (STYLE.md: drive both endpoints against each
other in memory, with ``now`` injected, as h11's ``ConnectionPair``). A
:class:`MemoryWire` connects one :class:`~emulator.headend.core.HeadEndCore`
to :class:`~emulator.node.device.Device` instances through a device-side
:class:`~emulator.coap.exchange.ExchangeLayer`, with a virtual clock, a fixed
latency and seeded random loss per delivered datagram. Datagrams to the
group address are delivered to every device as multicast (the devices check
GroupMatch themselves), except to devices listed in ``deaf``.

Nothing here opens a socket or reads the clock.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from emulator.coap.exchange import (
    Addr,
    Datagram,
    ExchangeLayer,
    IncomingRequest,
    IncomingResponse,
    RequestFailed,
)
from emulator.coap.message import Code, Message, Type, request_options
from emulator.firmware.blockstore import BlockStore
from emulator.headend.config import HeadEndConfig, NmsConfig, UploadConfig
from emulator.headend.core import HeadEndCore
from emulator.headend.groups import GroupSpec, GroupTable
from emulator.headend.inventory import Inventory
from emulator.node.device import Device
from emulator.node.firmware import image_from_file
from emulator.node.io import Request, Send
from emulator.node.profile import DeviceFaults, DeviceProfile, Identity

logger = logging.getLogger(__name__)

HEADEND_ADDR: Addr = ("fd00::1", 61628)
GROUP_ADDR = "ff05::6d66:0:0:1"


def device_addr(i: int) -> Addr:
    return (f"fd00::1:{i + 1:x}", 61628)


@dataclass(order=True)
class _Item:
    at: float
    seq: int
    datagram: Datagram = field(compare=False)


class MemoryWire:
    """Head-end core and devices connected in memory (see the module doc)."""

    def __init__(
        self,
        core: HeadEndCore,
        *,
        loss: float = 0.0,
        latency: float = 0.005,
        seed: int = 1,
        start: float = 1_700_000_000.0,
    ) -> None:
        self.core = core
        self.now = start
        self.loss = loss
        self.latency = latency
        self.rng = random.Random(seed)
        self.store = BlockStore()
        self.devices: list[Device] = []
        self.deaf: set[int] = set()
        """Indexes of devices that receive no multicast."""
        self.silent: set[int] = set()
        """Indexes of devices whose datagrams are all lost (both ways)."""
        self.exchange = ExchangeLayer(seed=seed)
        self._by_addr: dict[Addr, int] = {}
        self._queue: list[_Item] = []
        self._seq = 0
        self._reg_handles: dict[int, int] = {}
        self.delivered = 0
        self.dropped = 0

    # ------------------------------------------------------------ devices

    def add_devices(
        self,
        count: int,
        run_image: bytes,
        *,
        profile: DeviceProfile | None = None,
        nms_key: ec.EllipticCurvePublicKey | None = None,
        faults: DeviceFaults | None = None,
        block_size: int = 512,
    ) -> list[Device]:
        """Power on ``count`` devices running ``run_image``."""
        base = profile or DeviceProfile(boot_time=0.5, reg_min=1, reg_max=4)
        if nms_key is not None:
            base = replace(base, nms_key=nms_key)
        image = image_from_file(self.store, run_image, block_size, "run.bin")
        added = []
        for _ in range(count):
            i = len(self.devices)
            addr = device_addr(i)
            ident = Identity(eui64=0x00173BAB00000001 + i, address=addr[0])
            device = Device(ident, base, self.store, seed=i + 1, run_image=image)
            device.faults = faults
            device.power_on(self.now)
            self.devices.append(device)
            self._by_addr[addr] = i
            added.append(device)
        return added

    @staticmethod
    def eui(device: Device) -> str:
        return device.identity.eui64_text

    # ---------------------------------------------------------------- run

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Advance up to ``seconds``; True as soon as ``until()`` holds."""
        end = self.now + seconds
        self._collect()
        stuck = 0
        while True:
            if until is not None and until():
                return True
            at = self._next_time()
            if at is None or at > end:
                self.now = end
                return until() if until is not None else False
            stuck = stuck + 1 if at <= self.now else 0
            if stuck > 100_000:
                raise RuntimeError(f"no progress at {self.now}: a timer never clears")
            self.now = max(self.now, at)
            self._step()

    def _next_time(self) -> float | None:
        times: list[float] = []
        if self._queue:
            times.append(self._queue[0].at)
        for timer in (self.core.get_timer(), self.exchange.get_timer()):
            if timer is not None:
                times.append(timer)
        for device in self.devices:
            deadline = device.next_deadline()
            if deadline is not None:
                times.append(deadline)
        return min(times) if times else None

    def _step(self) -> None:
        now = self.now
        while self._queue and self._queue[0].at <= now:
            self._deliver(heapq.heappop(self._queue).datagram)
        self.core.handle_timer(now)
        for event in self.exchange.handle_timer(now):
            if isinstance(event, RequestFailed):
                self._device_event(event)
        for i, device in enumerate(self.devices):
            deadline = device.next_deadline()
            if deadline is not None and deadline <= now:
                for send in device.on_timer(now):
                    self._device_send(i, send)
        self._collect()

    # ----------------------------------------------------------- delivery

    def _collect(self) -> None:
        self.core.handle_timer(self.now)
        for datagram in self.core.datagrams_to_send():
            self._enqueue(datagram)
        for datagram in self.exchange.datagrams_to_send():
            self._enqueue(datagram)

    def _enqueue(self, datagram: Datagram) -> None:
        self._seq += 1
        item = _Item(self.now + self.latency, self._seq, datagram)
        heapq.heappush(self._queue, item)

    def _lost(self, index: int | None) -> bool:
        if index is not None and index in self.silent:
            return True
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return True
        return False

    def _deliver(self, datagram: Datagram) -> None:
        data, local, remote = datagram
        if remote == self.core.local or remote == HEADEND_ADDR:
            if self._lost(self._by_addr.get(local)):
                return
            self.delivered += 1
            self.core.receive_datagram(data, remote, local, self.now)
            return
        if remote[0] == GROUP_ADDR:
            self._to_group(data, local, remote)
            return
        index = self._by_addr.get(remote)
        if index is not None and not self._lost(index):
            self._to_device(index, data, local, multicast=False)

    def _to_group(self, data: bytes, src: Addr, group: Addr) -> None:
        """Decode (and deduplicate) once at the group address, then fan out."""
        event = self.exchange.receive_datagram(data, group, src, self.now)
        if not isinstance(event, IncomingRequest):
            return
        for i in range(len(self.devices)):
            if i not in self.deaf and not self._lost(i):
                self.delivered += 1
                self._device_request(i, event, multicast=True)

    def _to_device(self, i: int, data: bytes, src: Addr, *, multicast: bool) -> None:
        self.delivered += 1
        local = device_addr(i)
        event = self.exchange.receive_datagram(data, local, src, self.now)
        if isinstance(event, IncomingRequest):
            self._device_request(i, event, multicast)
        elif isinstance(event, IncomingResponse | RequestFailed):
            self._device_event(event)

    def _device_request(self, i: int, event: IncomingRequest, multicast: bool) -> None:
        msg = event.message
        req = Request(
            msg.code,
            tuple(msg.uri_path),
            tuple(msg.uri_query),
            msg.payload,
            msg.type == Type.CON,
            multicast,
        )
        device = self.devices[i]
        response = device.handle(req, self.now)
        if not multicast and not device.online(self.now):  # never received
            self.exchange.forget_request((event.local, event.remote, msg.mid))
        elif response is not None and not multicast:
            self.exchange.respond(event, response.code, response.payload, now=self.now)

    def _device_event(self, event: IncomingResponse | RequestFailed) -> None:
        index = self._reg_handles.pop(event.handle, None)
        if index is None:
            return
        i = index
        if isinstance(event, IncomingResponse):
            msg = event.message
            self.devices[i].on_registration_answer(msg.code, msg.payload, self.now)
        else:
            self.devices[i].on_registration_failed(self.now)

    def _device_send(self, i: int, send: Send) -> None:
        kind = Type.CON if send.confirmable else Type.NON
        message = Message(kind, Code.POST, options=request_options(send.path))
        message.payload = send.payload
        target = send.target or HEADEND_ADDR
        local = device_addr(i)
        if send.confirmable:
            handle = self.exchange.request(local, target, message, self.now)
            if send.kind == "register":
                self._reg_handles[handle] = i
        else:
            self.exchange.send_non(local, target, message, self.now)


def build_core(
    groups: list[GroupSpec],
    key: ec.EllipticCurvePrivateKey,
    *,
    report_interval: int = 0,
    seed: int = 3,
    **upload: Any,
) -> HeadEndCore:
    """A core for :class:`MemoryWire` tests: quick timers, unpaced uploads.
    A core standing in for a restarted head-end needs another ``seed``: the
    devices would take its first message ids for duplicates of the old one's."""
    settings: dict[str, Any] = {
        "pace": 0.0,
        "async_window": 2,
        "grace": 0.5,
        "batch": 32,
    }
    settings.update(upload)
    config = HeadEndConfig(
        nms=NmsConfig(
            report_interval=report_interval, reg_interval_min=1, reg_interval_max=4
        ),
        upload=UploadConfig(**settings),
    )
    return HeadEndCore(
        config,
        key,
        GroupTable(groups),
        Inventory(config.nms.silence_limit),
        local=HEADEND_ADDR,
        seed=seed,
    )


def signing_profile(key: ec.EllipticCurvePrivateKey) -> DeviceProfile:
    """Devices that require signed POSTs and answers with validity."""
    return DeviceProfile(
        boot_time=0.5,
        reg_min=1,
        reg_max=4,
        req_signed_post=True,
        req_valid_check_post=True,
        req_signed_resp=True,
        nms_key=key.public_key(),
    )
