"""``meshfleet image``: build, inspect and sign FND TPD firmware files (layer ``cli``).

The file format is CSMP.md, section "Firmware file format"; the work is done
by :mod:`emulator.firmware.image`, this module only parses options, reads and
writes files and prints. A bad file or key ends with exit status 1 and the
rejection reason, never a traceback.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any, NoReturn

import click
from cryptography.hazmat.primitives import serialization

from emulator.firmware.image import (
    FirmwareImage,
    ImageError,
    build_image,
    format_build_date,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    parse_image,
)

logger = logging.getLogger(__name__)

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, writable=True, path_type=Path)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(1)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")


def _write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror}")


@click.group()
def image() -> None:
    """Build and inspect FND third-party (TPD) firmware image files."""


@image.command()
@click.option("--hwid", required=True, help="Hardware id, case-sensitive.")
@click.option("--version", "version", required=True, help="major.minor.build")
@click.option("--input", "input_path", required=True, type=_FILE, help="Payload.")
@click.option("--output", "output_path", required=True, type=_OUT)
@click.option("--name", default="meshfleet", show_default=True)
@click.option("--branch", default="", help="app_git_branch.")
@click.option("--commit", default="", help="app_git_commit (8 bytes at most).")
@click.option("--date", "build_date", default=None, help='e.g. "Mar 15 2025".')
@click.option("--sub-hwid", default="")
@click.option("--kernel-rev", default="")
@click.option("--sign-key", type=_FILE, help="P-256 private key PEM.")
def build(
    hwid: str,
    version: str,
    input_path: Path,
    output_path: Path,
    name: str,
    branch: str,
    commit: str,
    build_date: str | None,
    sub_hwid: str,
    kernel_rev: str,
    sign_key: Path | None,
) -> None:
    """Wrap a vendor payload in a TPD header (and optionally sign it)."""
    try:
        key = load_signing_key(_read(sign_key)) if sign_key else None
        data = build_image(
            _read(input_path),
            hwid=hwid,
            version=version,
            name=name,
            branch=branch,
            commit=commit,
            build_date=build_date or format_build_date(datetime.date.today()),
            sub_hwid=sub_hwid,
            kernel_rev=kernel_rev,
            sign_key=key,
        )
        parsed = parse_image(data, verify_key=key.public_key() if key else None)
    except ImageError as exc:
        _fail(str(exc))
    _write(output_path, data)
    click.echo(
        f"{output_path}: {parsed.header.hwid} {parsed.header.version}, "
        f"{parsed.file_size} bytes, sha256 {parsed.sha256.hex()}"
        f"{', signed' if key else ''}"
    )


def _describe(img: FirmwareImage, path: Path) -> dict[str, Any]:
    h = img.header
    if img.signature is None:
        signature = "none"
    else:
        signature = "valid" if img.signature_verified else "present, not verified"
    return {
        "file": str(path),
        "file_size": img.file_size,
        "sha256": img.sha256.hex(),
        "hdr_version": h.hdr_version,
        "hdr_len": h.hdr_len,
        "version": h.version,
        "app_len": h.app_len,
        "payload_len": len(img.payload),
        "app_name": h.app_name,
        "app_git_branch": h.app_git_branch,
        "app_git_commit": h.app_git_commit,
        "app_git_flag": h.app_git_flag,
        "app_build_date": h.app_build_date,
        "hwid": h.hwid,
        "sub_hwid": h.sub_hwid,
        "kernel_rev": h.kernel_rev,
        "crc": f"0x{h.crc:08x}",
        "crc_ok": True,
        "signature": signature,
    }


@image.command()
@click.argument("file", type=_FILE)
@click.option("--verify-key", type=_FILE, help="P-256 public key or cert PEM.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(file: Path, verify_key: Path | None, as_json: bool) -> None:
    """Check a firmware file and print its header; exit 1 if it is bad."""
    try:
        key = load_verify_key(_read(verify_key)) if verify_key else None
        img = parse_image(_read(file), verify_key=key)
    except ImageError as exc:
        _fail(f"{file}: {exc}")
    info = _describe(img, file)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    width = max(len(k) for k in info)
    for field, value in info.items():
        click.echo(f"{field:<{width}}  {value}")


def _public_path(private: Path) -> Path:
    if private.suffix == ".pem":
        return private.with_suffix(".pub.pem")
    return private.with_name(private.name + ".pub")


@image.command()
@click.option("--out", "out", required=True, type=_OUT, help="Private key PEM.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def keygen(out: Path, force: bool) -> None:
    """Make an ECDSA P-256 signing key: OUT, and its public key beside it."""
    public = _public_path(out)
    for path in (out, public):
        if path.exists() and not force:
            _fail(f"{path} exists (use --force to overwrite)")
    key = generate_signing_key()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    _write(out, private_pem, mode=0o600)
    _write(public, public_pem)
    click.echo(f"private key {out}, public key {public}")
