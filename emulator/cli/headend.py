"""``meshfleet headend``: run the head-end and manage its images and groups (``cli``).

Parsing and printing only; the work is in :mod:`emulator.headend`. Images and
groups live in the state directory's SQLite database, so ``image`` and
``group`` commands work whether the head-end runs or not (a running one
picks the changes up within ``store.poll_interval``). Bad input ends with
exit status 1 (2 for a bad configuration) and the reason, never a traceback.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emulator.firmware.image import ImageError, load_verify_key
from emulator.headend.config import ConfigError, HeadEndConfig, load_config
from emulator.headend.groups import DEFAULT_GROUP, assign_ids, make_group
from emulator.headend.images import StoredImage, check_image, image_path
from emulator.headend.images import write_image_file as _write_image_file
from emulator.headend.service import KEY_NAME, HeadEnd, images_dir
from emulator.headend.store import Database, StoreError, db_path

logger = logging.getLogger(__name__)

DEFAULT_STATE = "headend-state"
_STATE = click.option(
    "--state",
    "state",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE,
    show_default=True,
    envvar="MESHFLEET_HEADEND_STATE",
    help="State directory (database, images, NMS key).",
)
_CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML configuration.",
)


def _fail(message: str, status: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(status)


def _config(path: Path | None) -> HeadEndConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _db(state: Path) -> Database:
    try:
        return Database(db_path(state))
    except Exception as exc:  # sqlite3.Error, OSError
        _fail(f"cannot open the state in {state}: {exc}")


@click.group()
def headend() -> None:
    """The FND-like head-end: CSMP NMS, firmware groups, NB API."""


# ------------------------------------------------------------------- run


@headend.command()
@_CONFIG
@_STATE
@click.option("--listen", help="CSMP listen address (default from config: ::).")
@click.option("--csmp-port", type=int, help="CSMP UDP port (default 61628).")
@click.option("--http-port", type=int, help="NB API HTTP port; -1 disables it.")
def run(
    config_path: Path | None,
    state: Path,
    listen: str | None,
    csmp_port: int | None,
    http_port: int | None,
) -> None:
    """Run the head-end until SIGINT or SIGTERM."""
    config = _config(config_path)
    csmp = config.csmp
    if listen is not None:
        csmp = replace(csmp, listen=listen)
    if csmp_port is not None:
        csmp = replace(csmp, port=csmp_port)
    http = config.http if http_port is None else replace(config.http, port=http_port)
    config = replace(config, csmp=csmp, http=http)
    try:
        asyncio.run(_serve(config, state))
    except OSError as exc:
        _fail(f"cannot start: {exc}")
    except ImageError as exc:
        _fail(f"bad NMS key: {exc}")
    except ValueError as exc:  # e.g. a configured group id taken in the store
        _fail(f"cannot start: {exc}", 2)


async def _serve(config: HeadEndConfig, state: Path) -> None:
    from emulator.gctune import tune_for_long_lived_heap

    headend_ = HeadEnd(config, state)
    await headend_.start()
    tune_for_long_lived_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        click.echo(f"CSMP on [{config.csmp.listen}]:{headend_.csmp_port}")
        if headend_.http_port is not None:
            click.echo(f"NB API on http://[{config.http.listen}]:{headend_.http_port}")
        if headend_.generated_password:
            click.echo(
                f"admin password (shown once, stored hashed in {state}): "
                f"{headend_.generated_password}"
            )
        await stop.wait()
    finally:
        await headend_.stop()


# ---------------------------------------------------------------- keygen


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    if path.exists() and not force:
        _fail(f"{path} exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def self_signed(key: ec.EllipticCurvePrivateKey, days: int = 3650) -> bytes:
    """A self-signed certificate PEM for the NMS key (CN meshfleet-nms)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshfleet-nms")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@headend.command()
@_STATE
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Private key PEM (default <state>/{KEY_NAME}).",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def keygen(state: Path, out: Path | None, force: bool) -> None:
    """Make the NMS P-256 key, its public key and a self-signed certificate.

    Give devices the certificate (fleet ``security.nms_certificate``) so they
    can check the head-end's signatures.
    """
    out = out or state / KEY_NAME
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stem = out.with_suffix("") if out.suffix == ".pem" else out
    pub_path = stem.with_name(stem.name + ".pub.pem")
    cert_path = stem.with_name(stem.name + ".crt.pem")
    for path in (out, pub_path, cert_path):
        if path.exists() and not force:
            _fail(f"{path} exists (use --force to overwrite)")
    _write(out, private, 0o600, force)
    _write(pub_path, public, 0o644, force)
    _write(cert_path, self_signed(key), 0o644, force)
    click.echo(f"private key {out}\npublic key {pub_path}\ncertificate {cert_path}")


# ----------------------------------------------------------------- image


@headend.group()
def image() -> None:
    """Add, list and remove firmware images of the head-end's store."""


@image.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Image name (default: the file name).")
@_CONFIG
@_STATE
def image_add(
    file: Path, name: str | None, config_path: Path | None, state: Path
) -> None:
    """Check FILE and add it to the store."""
    config = _config(config_path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")
    try:
        key_file = config.images.verify_key
        key = load_verify_key(Path(key_file).read_bytes()) if key_file else None
        parsed = check_image(data, key)
    except ImageError as exc:
        _fail(f"{file}: rejected: {exc}")
    except OSError as exc:
        _fail(f"cannot read the verify key: {exc.strerror}")
    stored = StoredImage(
        name or file.name,
        parsed.sha256,
        parsed.header.version,
        parsed.header.hwid,
        len(data),
        time.time(),
    )
    _write_image_file(images_dir(state), data)
    db = _db(state)
    try:
        added = db.add_image(stored)
    except StoreError as exc:
        _fail(str(exc))
    finally:
        db.close()
    verb = "added" if added else "already present:"
    click.echo(
        f"{verb} {stored.name} ({stored.hwid} {stored.version}, {stored.size} "
        f"bytes, sha256 {stored.sha256.hex()})"
    )


@image.command("list")
@_STATE
def image_list(state: Path) -> None:
    """List the stored images."""
    db = _db(state)
    try:
        images = db.images()
    finally:
        db.close()
    for img in images:
        click.echo(
            f"{img.name}\t{img.hwid}\t{img.version}\t{img.size}\t{img.sha256.hex()}"
        )


@image.command("remove")
@click.argument("name")
@_STATE
def image_remove(name: str, state: Path) -> None:
    """Remove the image called NAME (any case)."""
    db = _db(state)
    try:
        removed, shared = db.remove_image(name)
    except StoreError as exc:
        _fail(str(exc))
    finally:
        db.close()
    if not shared:
        image_path(images_dir(state), removed.sha256).unlink(missing_ok=True)
    click.echo(f"removed {removed.name}")


# ----------------------------------------------------------------- group


@headend.group()
def group() -> None:
    """Add, list and remove firmware groups."""


@group.command("add")
@click.argument("name")
@click.option("--id", "group_id", type=int, default=0, help="CSMP group id.")
@click.option("--multicast", default="", help="Group address or [addr]:port relay.")
@click.option("--hardware-id", multiple=True, help="Members by hardware id.")
@click.option("--prefix", multiple=True, help="Members by address prefix.")
@click.option("--eui", multiple=True, help="Explicit member EUI-64.")
@click.option("--replace", "replace_", is_flag=True, help="Update an existing group.")
@_STATE
def group_add(
    name: str,
    group_id: int,
    multicast: str,
    hardware_id: tuple[str, ...],
    prefix: tuple[str, ...],
    eui: tuple[str, ...],
    replace_: bool,
    state: Path,
) -> None:
    """Add (or with --replace update) the group NAME."""
    try:
        spec = make_group(
            name,
            id=group_id,
            multicast=multicast,
            hardware_ids=hardware_id,
            prefixes=prefix,
            euis=eui,
        )
    except ValueError as exc:
        _fail(f"group {name!r}: {exc}")
    db = _db(state)
    try:
        existing = {g.key: g for g in db.groups()}
        old = existing.get(spec.key)
        if old is not None and spec.id == 0:
            spec = replace(spec, id=old.id)
        taken = {g.id for g in existing.values() if g.key != spec.key}
        (spec,) = assign_ids([spec], taken)
        db.put_groups([spec], replace=replace_)
    except StoreError as exc:
        _fail(str(exc))
    finally:
        db.close()
    click.echo(f"group {spec.name} id {spec.id} {spec.multicast or '(unicast)'}")


@group.command("list")
@_STATE
def group_list(state: Path) -> None:
    """List the groups and their rules."""
    db = _db(state)
    try:
        groups = db.groups()
    finally:
        db.close()
    for spec in groups:
        rules = " ".join(
            [f"hwid={h}" for h in spec.hardware_ids]
            + [f"prefix={p}" for p in spec.prefixes]
            + [f"eui={e}" for e in spec.euis]
        )
        target = spec.multicast or "(unicast)"
        click.echo(f"{spec.id}\t{spec.name}\t{target}\t{rules}")


@group.command("remove")
@click.argument("name")
@_STATE
def group_remove(name: str, state: Path) -> None:
    """Remove the group NAME; its members fall back to the default group."""
    if name.strip().lower() == DEFAULT_GROUP:
        _fail(f"{DEFAULT_GROUP} cannot be removed")
    db = _db(state)
    try:
        db.remove_group(name)
    except StoreError as exc:
        _fail(str(exc))
    finally:
        db.close()
    click.echo(f"removed group {name}")
