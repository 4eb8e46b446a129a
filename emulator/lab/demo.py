"""``meshfleet demo``: a whole firmware campaign in one command.

Orchestration layer. The demo does what a lab engineer does by hand:

1. builds and signs a demo image (TPD format) for the fleet's hardware;
2. writes a head-end and a fleet configuration in a temporary directory,
   generates the head-end's NMS key and gives the fleet its public key, so
   that registration answers and POSTs are really signed and checked;
3. starts ``meshfleet headend run`` and ``meshfleet fleet run`` as child
   processes: as root in two network namespaces joined by a veth pair, with
   real per-device IPv6 addresses and real IPv6 multicast; otherwise on
   loopback (one port per device, multicast relayed by the fleet);
4. waits until every device has registered, then drives the upgrade through
   the SOAP NB API exactly as a user's script would: startUpload, progress
   from getFirmwareUploadStatus, getFirmwareImageInfoList,
   setBackupFirmwareImage, scheduleReload a few seconds ahead;
5. waits for the reboots and checks through the head-end that every device
   runs the new version; prints a summary table and the timings.

It returns 0 only when that check passed. Every process it started is gone
when it returns, also after Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emulator.firmware.image import build_image, generate_signing_key
from emulator.headend.api import ImageInfoList, OpResult, ValuePair
from emulator.lab.procs import (
    LabError,
    ProcessSet,
    free_port,
    meshfleet_command,
    run_meshfleet,
)
from emulator.lab.progress import Progress, Snapshot
from emulator.nbapi.client import NbapiClient, NbapiError
from emulator.net.netns import TwoHostLab, can_create_namespaces

logger = logging.getLogger(__name__)

GROUP = "demo-meters"
GROUP_ID = 2
HWID = "OPENCSMP"
OLD_VERSION = "6.8.1"
NEW_VERSION = "6.10.2"
IMAGE_NAME = f"meshfleet-demo-{NEW_VERSION}.bin"
FLEET_PREFIX = "fd00:6d66::/64"
MULTICAST_BASE = "ff05::6d66:0:0:0"


class DemoError(LabError):
    """The demo could not finish; the message says where and why."""


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 1000
    loss: float = 0.02
    image_kib: int = 256
    seed: int = 1
    mode: str = "auto"
    """auto (netns when root), netns, or loopback."""
    timeout: float = 600.0
    """Give up on any phase after this many seconds."""
    reload_delay: int = 0
    """scheduleReload this many seconds ahead (0: enough for the fleet size)."""
    log_dir: Path | None = None
    """Keep the head-end's and the fleet's logs here (default: discarded)."""


@dataclass
class DemoResult:
    ok: bool
    mode: str
    timings: dict[str, float] = field(default_factory=dict)
    status: list[ValuePair] = field(default_factory=list)
    images: ImageInfoList | None = None
    running_new: int = 0
    message: str = ""


@dataclass(frozen=True)
class _Lab:
    """Where things run: addresses, command prefixes, multicast setup."""

    mode: str
    headend_prefix: list[str]
    fleet_prefix: list[str]
    nms: str
    http_host: str
    headend_multicast_if: str
    fleet_multicast_if: str
    fleet_addressing: str
    csmp_port: int = 61628
    relay: str = ""
    """The fleet's unicast stand-in for the group address (no multicast)."""


def _resolve_mode(requested: str) -> str:
    if requested == "auto":
        return "netns" if can_create_namespaces() else "loopback"
    if requested == "netns" and not can_create_namespaces():
        raise DemoError("netns mode needs root and iproute2 (ip netns)")
    return requested


@contextmanager
def _lab(mode: str) -> Iterator[_Lab]:
    if mode == "loopback":
        port, relay = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        yield _Lab(
            "loopback", [], [], f"[::1]:{port}", "::1", "", "", "loopback-ports",
            port, f"[::1]:{relay}",
        )  # fmt: skip
        return
    with TwoHostLab(f"mfd{os.getpid() % 100000}", FLEET_PREFIX) as lab:
        yield _Lab(
            "netns",
            lab.exec_prefix(lab.headend_ns),
            lab.exec_prefix(lab.fleet_ns),
            f"[{lab.headend_addr}]:61628",
            lab.headend_mgmt_addr,
            lab.headend_if,
            lab.fleet_if,
            "prefix",
        )


def _pace(devices: int) -> int:
    """Blocks/s the fleet process can fan out to ``devices`` with headroom."""
    return max(20, min(400, 200_000 // max(devices, 1)))


def _headend_config(
    lab: _Lab, http_port: int, verify_key: Path, devices: int = 1000
) -> str:
    pace = _pace(devices)
    if lab.mode == "netns":
        multicast = MULTICAST_BASE.replace("0:0:0", f"0:0:{GROUP_ID:x}")
    else:
        multicast = lab.relay
    return f"""
[csmp]
port = {lab.csmp_port}
multicast_interface = "{lab.headend_multicast_if}"

[http]
listen = "{"::" if lab.mode == "netns" else lab.http_host}"
port = {http_port}

[nms]
report_interval = 3600
reg_interval_min = 5
reg_interval_max = 30

[upload]
block_size = 1024
pace = {pace}
async_window = 3
grace = 1.0

[commands]
async_window = 3
wait = 30

[images]
verify_key = "{verify_key}"

[[groups]]
name = "{GROUP}"
id = {GROUP_ID}
multicast = "{multicast}"
hardware_id = ["{HWID}"]
"""


def _fleet_config(opts: DemoOptions, lab: _Lab, nms_pub: Path) -> str:
    relay = lab.relay or "[::1]:61629"
    loss = f"\n[[faults.link]]\nloss = {opts.loss}\n" if opts.loss > 0 else ""
    return f"""
[fleet]
devices = {opts.devices}
prefix = "{FLEET_PREFIX}"
nms = "{lab.nms}"
seed = {opts.seed}
addressing = "{lab.fleet_addressing}"
boot_time = 2.0
power_on_jitter = {min(5.0, 1.0 + opts.devices / 2000):.1f}

[registration]
min = 2
max = 10

[security]
require_signed_post = true
require_signed_response = true
nms_certificate = "{nms_pub}"

[multicast]
mode = "{"join" if lab.mode == "netns" else "relay"}"
base = "{MULTICAST_BASE}"
relay = "{relay}"
interface = "{lab.fleet_multicast_if}"

[[hardware]]
name = "meter"
hardware_id = "{HWID}"
model = "OPENCSMP-NODE"
[[hardware.images]]
slot = "run"
version = "{OLD_VERSION}"
{loss}"""


class Demo:
    """One run of the demo; :meth:`run` does everything and cleans up."""

    def __init__(self, opts: DemoOptions, progress: Progress) -> None:
        self.opts = opts
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.password = secrets.token_urlsafe(12)

    def run(self) -> DemoResult:
        mode = _resolve_mode(self.opts.mode)
        with ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory("-mfdemo")))
            lab = stack.enter_context(_lab(mode))
            log_dir = self.opts.log_dir or work
            log_dir.mkdir(parents=True, exist_ok=True)
            procs = ProcessSet(log_dir)
            stack.callback(procs.stop)
            try:
                return self._run_in(lab, work, procs)
            except LabError as exc:
                raise DemoError(f"{exc}{procs.tails()}") from exc
        raise AssertionError("unreachable")

    # -- setting up ------------------------------------------------------

    def _run_in(self, lab: _Lab, work: Path, procs: ProcessSet) -> DemoResult:
        self.progress.note(f"mode: {lab.mode}" + _mode_note(lab.mode))
        client = self._setup(lab, work, procs)
        try:
            return self._campaign(lab, client, procs)
        except NbapiError as exc:
            raise DemoError(f"NB API call failed: {exc}") from exc

    def _setup(self, lab: _Lab, work: Path, procs: ProcessSet) -> NbapiClient:
        t0 = time.monotonic()
        image, verify_key = self._build_image(work)
        state = work / "headend-state"
        run_meshfleet(["headend", "keygen", "--state", str(state)], lab.headend_prefix)
        nms_pub = state / "nms-key.pub.pem"
        http_port = free_port()
        he_conf = work / "headend.toml"
        he_conf.write_text(
            _headend_config(lab, http_port, verify_key, self.opts.devices)
        )
        run_meshfleet(["headend", "image", "add", str(image), "--state", str(state),
                  "--config", str(he_conf)], lab.headend_prefix)  # fmt: skip
        fleet_conf = work / "fleet.toml"
        fleet_conf.write_text(_fleet_config(self.opts, lab, nms_pub))
        env = {"MESHFLEET_ADMIN_PASSWORD": self.password}
        procs.start("headend", meshfleet_command(
            "headend", "run", "--config", str(he_conf), "--state", str(state)),
            env=env, prefix=lab.headend_prefix)  # fmt: skip
        procs.start("fleet", meshfleet_command(
            "fleet", "run", str(fleet_conf), "--state", str(work / "fleet-state")),
            prefix=lab.fleet_prefix)  # fmt: skip
        host = f"[{lab.http_host}]"
        url = f"http://{host}:{http_port}/nbapi/meshDeviceOps"
        client = NbapiClient(url, "admin", self.password, timeout=60)
        self.timings["setup"] = time.monotonic() - t0
        return client

    def _build_image(self, work: Path) -> tuple[Path, Path]:
        key = generate_signing_key()
        payload = _demo_payload(self.opts.image_kib * 1024 - 256, self.opts.seed)
        data = build_image(
            payload, hwid=HWID, version=NEW_VERSION, name="meshfleet-demo", sign_key=key
        )
        path = work / IMAGE_NAME
        path.write_bytes(data)
        from cryptography.hazmat.primitives import serialization

        pub = work / "image-signing.pub.pem"
        pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
        return path, pub

    # -- the campaign ----------------------------------------------------

    def _campaign(
        self, lab: _Lab, client: NbapiClient, procs: ProcessSet
    ) -> DemoResult:
        n = self.opts.devices
        self._phase("registration", lambda: self._registered(client) >= n, procs)
        started = client.start_upload(None, GROUP, IMAGE_NAME)
        _require(started, "startUpload")
        self._phase("upload", lambda: self._uploaded(client) >= n, procs)
        images = client.get_image_info_list(None, GROUP)
        _require(images, "getFirmwareImageInfoList")
        t = time.monotonic()
        _require(client.set_backup_image(None, GROUP, IMAGE_NAME), "setBackup")
        self.timings["set backup"] = time.monotonic() - t
        t = time.monotonic()
        ahead = self.opts.reload_delay or 5 + self.opts.devices // 100
        when = datetime.now(UTC) + timedelta(seconds=ahead)
        reload = client.schedule_reload(
            None, GROUP, IMAGE_NAME, when.strftime("%Y-%m-%dT%H:%M:%S")
        )
        _require(reload, "scheduleReload")
        self.timings["schedule reload"] = time.monotonic() - t
        self._phase("reboot", lambda: self._running_new(client) >= n, procs)
        return self._result(lab, client)

    def _result(self, lab: _Lab, client: NbapiClient) -> DemoResult:
        status = client.get_upload_status(None, GROUP)
        images = client.get_image_info_list(None, GROUP)
        running = _running(images.data, NEW_VERSION)
        ok = running == self.opts.devices
        message = (
            f"all {running} devices run {NEW_VERSION}"
            if ok
            else f"only {running} of {self.opts.devices} devices run {NEW_VERSION}"
        )
        return DemoResult(
            ok, lab.mode, dict(self.timings), status.data or [], images.data,
            running, message,
        )  # fmt: skip

    def _phase(self, name: str, done: Callable[[], bool], procs: ProcessSet) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.opts.timeout
        self.progress.phase(name)
        while not done():
            dead = procs.dead()
            if dead is not None:
                raise DemoError(
                    f"{dead.name} exited with {dead.process.returncode}:\n"
                    + dead.tail()
                )
            if time.monotonic() > deadline:
                raise DemoError(f"{name} did not finish in {self.opts.timeout:.0f} s")
            time.sleep(0.5)
        self.timings[name] = time.monotonic() - t0
        self.progress.phase_done(name, self.timings[name])

    # -- reading the head-end ---------------------------------------------

    def _status(self, client: NbapiClient) -> dict[str, int]:
        try:
            result = client.get_upload_status(None, GROUP)
        except NbapiError as exc:  # the head-end may still be starting
            logger.debug("status not yet available: %s", exc)
            return {}
        pairs = {p.name: p.value for p in result.data or []}
        blocks = _scrape_blocks(client.url.rsplit("/nbapi/", 1)[0] + "/metrics")
        snap = Snapshot(time.monotonic(), pairs, self.opts.devices, blocks)
        self.progress.update(snap)
        return pairs

    def _registered(self, client: NbapiClient) -> int:
        return self._status(client).get("up", 0)

    def _uploaded(self, client: NbapiClient) -> int:
        pairs = self._status(client)
        failed = pairs.get("failed", 0) + pairs.get("refused", 0)
        if failed:
            raise DemoError(f"{failed} devices failed or refused the upload")
        return pairs.get("complete", 0)

    def _running_new(self, client: NbapiClient) -> int:
        self._status(client)
        try:
            return _running(client.get_image_info_list(None, GROUP).data, NEW_VERSION)
        except NbapiError:
            return 0


def _scrape_blocks(url: str) -> dict[str, float]:
    """ImageBlocks sent by mode, from the head-end's Prometheus text."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("blocks_sent"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels.get("mode", "")] = sample.value
    return out


def _running(images: ImageInfoList | None, version: str) -> int:
    if images is None:
        return 0
    return sum(i.running for i in images.images if i.version == version)


def _require(result: OpResult[Any], what: str) -> None:
    if result.code != 0:
        raise DemoError(f"{what} returned {result.code}: {result.message}")


def _demo_payload(size: int, seed: int) -> bytes:
    """Deterministic, incompressible-looking payload of ``size`` bytes."""
    import hashlib

    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _mode_note(mode: str) -> str:
    if mode == "netns":
        return " (two network namespaces, per-device IPv6 addresses, real multicast)"
    return (
        " (no root: loopback with one port per device, multicast relayed by the fleet)"
    )
