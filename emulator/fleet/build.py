"""From configuration to devices (layer ``fleet``, pure but for image files).

Turns a :class:`~emulator.fleet.config.FleetConfig` into what the runtime
runs: one shared :class:`~emulator.node.profile.DeviceProfile` per hardware
mix, the initial slot images (CSMP.md "Firmware slots"; built once per
(hwid, version) with :func:`emulator.firmware.image.build_image` and stored
once in the shared BlockStore), and a fresh or restored
:class:`~emulator.node.device.Device` per planned device.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from emulator.csmp.signing import public_key_from_pem
from emulator.firmware.blockstore import BlockStore
from emulator.firmware.image import build_image
from emulator.fleet.config import ConfigError, FleetConfig, HardwareMix, ImageSpec
from emulator.fleet.inventory import Planned
from emulator.fleet.sharding import mix64
from emulator.node.device import Device
from emulator.node.firmware import image_from_file
from emulator.node.profile import DeviceProfile, Identity, SlotImage

logger = logging.getLogger(__name__)

IMAGE_BLOCK_SIZE = 1024
"""Block size under which initial images are stored (the CSMP MTU)."""


def generated_payload(hwid: str, version: str, size: int) -> bytes:
    """Deterministic pseudo-random image payload for (hwid, version)."""
    return random.Random(f"image:{hwid}:{version}").randbytes(size)


def load_nms_key(path: str) -> EllipticCurvePublicKey | None:
    """The NMS public key from a PEM certificate or key file (None if no path)."""
    if not path:
        return None
    try:
        return public_key_from_pem(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError([f"security.nms_certificate: {exc}"]) from None


def make_profile(
    config: FleetConfig, mix: HardwareMix, nms_key: EllipticCurvePublicKey | None
) -> DeviceProfile:
    """The shared profile of one hardware mix."""
    reg, sec = config.registration, config.security
    return DeviceProfile(
        hardware_id=mix.hardware_id,
        vendor_hw_id=mix.vendor_hw_id,
        model=mix.model,
        function=mix.function,
        boot_time=config.boot_time,
        reg_min=max(1, math.ceil(reg.min)),
        reg_max=max(1, math.ceil(reg.max)),
        report_interval=config.reports.interval,
        report_tlvs=tuple(str(t) for t in config.reports.tlvs),
        req_signed_post=sec.require_signed_post,
        req_valid_check_post=sec.require_valid_check,
        req_signed_resp=sec.require_signed_response,
        nms_key=nms_key,
    )


class ImageCache:
    """Initial slot images, built and stored once per (hwid, version, file)."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self._images: dict[tuple[str, str, str, int], SlotImage] = {}
        self.slots: dict[
            tuple[str, str, tuple[str, ...]], tuple[SlotImage | None, SlotImage | None]
        ] = {}
        """(mix, hardware id, inventory versions) -> (RUN, BACKUP) images."""

    def get(self, hwid: str, spec: ImageSpec) -> SlotImage:
        key = (hwid, spec.version, spec.file, spec.size)
        image = self._images.get(key)
        if image is None:
            image = self._images[key] = self._make(hwid, spec)
        return image

    def _make(self, hwid: str, spec: ImageSpec) -> SlotImage:
        if spec.file:
            try:
                data = Path(spec.file).read_bytes()
            except OSError as exc:
                raise ConfigError([f"image {spec.file}: {exc.strerror}"]) from None
            name = Path(spec.file).name
        else:
            payload = generated_payload(hwid, spec.version, spec.size)
            data = build_image(payload, hwid=hwid, version=spec.version)
            name = f"{hwid}-{spec.version}.bin"
        return image_from_file(self.store, data, IMAGE_BLOCK_SIZE, name)


@dataclass(slots=True)
class Blueprint:
    """Everything needed to create one device of the fleet."""

    identity: Identity
    profile: DeviceProfile
    seed: int
    run: SlotImage | None
    backup: SlotImage | None


def device_seed(fleet_seed: int, eui64: int) -> int:
    return mix64(mix64(fleet_seed) ^ eui64)


def blueprint(
    config: FleetConfig,
    planned: Planned,
    profile: DeviceProfile,
    images: ImageCache,
) -> Blueprint:
    """The blueprint of ``planned`` (inventory versions override the mix's)."""
    run, backup = slot_images(planned, images)
    identity = Identity(planned.eui64, planned.address)
    seed = device_seed(config.seed, planned.eui64)
    return Blueprint(identity, profile, seed, run, backup)


def slot_images(
    planned: Planned, images: ImageCache
) -> tuple[SlotImage | None, SlotImage | None]:
    """The RUN and BACKUP images of ``planned`` (the same for every device of
    a mix without inventory versions: :class:`ImageCache` remembers them)."""
    key = (planned.mix.name, planned.hardware_id, planned.versions)
    known = images.slots.get(key)
    if known is None:
        known = images.slots[key] = _slot_images(planned, images)
    return known


def _slot_images(
    planned: Planned, images: ImageCache
) -> tuple[SlotImage | None, SlotImage | None]:
    specs = {s.slot: s for s in planned.mix.images}
    for slot, version in zip(
        ("run", "upload", "backup"), planned.versions, strict=False
    ):
        if version:
            base = specs.get(slot, ImageSpec(slot=slot))
            specs[slot] = ImageSpec(slot, version, base.size, "")
    if "upload" in specs:
        logger.debug("initial upload slot images are not supported; ignored")
    hwid = planned.hardware_id
    run = images.get(hwid, specs["run"]) if "run" in specs else None
    backup = images.get(hwid, specs["backup"]) if "backup" in specs else None
    return run, backup


def new_device(bp: Blueprint, store: BlockStore) -> Device:
    return Device(
        bp.identity,
        bp.profile,
        store,
        seed=bp.seed,
        run_image=bp.run,
        backup_image=bp.backup,
    )
