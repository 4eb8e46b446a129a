"""Tests of the ``meshfleet image`` command group (emulator.cli.image)."""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import VECTORS

from emulator.cli.image import image
from emulator.cli.main import main
from emulator.firmware.image import format_build_date, parse_image

VECTOR = VECTORS / "opencsmp-node-6.8-sample-image.bin"


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(image, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(b"\x7fELF" + bytes(2000))
    return path


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    result = _run("keygen", "--out", tmp_path / "signer.pem")
    assert result.exit_code == 0, result.output
    return tmp_path / "signer.pem", tmp_path / "signer.pub.pem"


def test_build_and_show(tmp_path: Path, payload: Path) -> None:
    out = tmp_path / "fw.bin"
    result = _run(
        "build",
        "--hwid",
        "IR510",
        "--version",
        "6.10.2",
        "--input",
        payload,
        "--output",
        out,
        "--name",
        "demo",
    )
    assert result.exit_code == 0, result.output
    img = parse_image(out.read_bytes())
    assert img.header.version == "6.10.2" and img.header.hwid == "IR510"
    assert img.header.app_name == "demo"
    assert img.header.app_build_date == format_build_date(datetime.date.today())
    assert img.sha256.hex() in result.output
    shown = _run("show", out)
    assert shown.exit_code == 0
    assert "6.10.2" in shown.output and "IR510" in shown.output
    assert "crc_ok" in shown.output and "none" in shown.output


def test_show_json_real_vector() -> None:
    if not VECTOR.exists():
        pytest.skip("no vectors")
    result = _run("show", VECTOR, "--json")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["version"] == "6.8.99"
    assert info["hwid"] == "OPENCSMP"
    assert info["file_size"] == 24114
    assert info["crc"] == "0x9921a855" and info["crc_ok"] is True
    assert info["signature"] == "none"


def test_signed_build_and_verify(
    tmp_path: Path, payload: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    out = tmp_path / "signed.bin"
    result = _run(
        "build",
        "--hwid",
        "H",
        "--version",
        "1.2.3",
        "--input",
        payload,
        "--output",
        out,
        "--sign-key",
        private,
        "--date",
        "Mar 15 2025",
    )
    assert result.exit_code == 0, result.output
    assert "signed" in result.output
    shown = json.loads(_run("show", out, "--json").output)
    assert shown["signature"] == "present, not verified"
    assert shown["app_build_date"] == "Mar 15 2025"
    verified = _run("show", out, "--verify-key", public, "--json")
    assert verified.exit_code == 0
    assert json.loads(verified.output)["signature"] == "valid"


def test_wrong_verify_key_fails(
    tmp_path: Path, payload: Path, keys: tuple[Path, Path]
) -> None:
    private, _ = keys
    out = tmp_path / "signed.bin"
    _run(
        "build",
        "--hwid",
        "H",
        "--version",
        "1.2.3",
        "--input",
        payload,
        "--output",
        out,
        "--sign-key",
        private,
    )
    assert _run("keygen", "--out", tmp_path / "other.pem").exit_code == 0
    result = _run("show", out, "--verify-key", tmp_path / "other.pub.pem")
    assert result.exit_code == 1
    assert "bad_signature" in result.output
    assert "Traceback" not in result.output


def test_show_bad_file_exits_1(tmp_path: Path, payload: Path) -> None:
    out = tmp_path / "fw.bin"
    _run(
        "build",
        "--hwid",
        "H",
        "--version",
        "1.2.3",
        "--input",
        payload,
        "--output",
        out,
    )
    data = bytearray(out.read_bytes())
    data[40] ^= 1
    out.write_bytes(bytes(data))
    result = _run("show", out)
    assert result.exit_code == 1
    assert "crc_mismatch" in result.output
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(b"\x02\x00")
    result = _run("show", truncated)
    assert result.exit_code == 1 and "truncated" in result.output


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [("--version", "6.10", "bad_version"), ("--hwid", "H" * 33, "field_too_long")],
)
def test_build_rejects_bad_arguments(
    tmp_path: Path, payload: Path, option: str, value: str, reason: str
) -> None:
    args = {"--hwid": "H", "--version": "1.0.0", option: value}
    out = tmp_path / "fw.bin"
    result = _run(
        "build",
        "--input",
        payload,
        "--output",
        out,
        *[x for pair in args.items() for x in pair],
    )
    assert result.exit_code == 1
    assert reason in result.output
    assert not out.exists()


def test_build_with_bad_sign_key(tmp_path: Path, payload: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key")
    result = _run(
        "build",
        "--hwid",
        "H",
        "--version",
        "1.0.0",
        "--input",
        payload,
        "--output",
        tmp_path / "o.bin",
        "--sign-key",
        bogus,
    )
    assert result.exit_code == 1 and "bad_key" in result.output


def test_keygen_files(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in public.read_bytes()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    again = _run("keygen", "--out", private)
    assert again.exit_code == 1 and "exists" in again.output
    assert _run("keygen", "--out", private, "--force").exit_code == 0


def test_keygen_without_pem_suffix(tmp_path: Path) -> None:
    assert _run("keygen", "--out", tmp_path / "k").exit_code == 0
    assert (tmp_path / "k.pub").exists()


def test_reachable_from_meshfleet_main(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["image", "--help"])
    assert result.exit_code == 0
    assert "build" in result.output and "keygen" in result.output
