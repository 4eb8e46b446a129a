"""``meshfleet demo`` end to end: exit status, final table, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_with_100_devices_upgrades_all() -> None:
    env = dict(os.environ, COLUMNS="120")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli.main", "demo", "--devices", "100",
         "--image-kib", "64", "--timeout", "150"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "PASS: all 100 devices run 6.10.2" in out
    row = next(line for line in out.splitlines() if "meshfleet-demo-6.10.2.bin" in line)
    # image, version, running, uploaded, backup
    assert [cell.strip() for cell in row.split("│")[1:-1]] == [
        "meshfleet-demo-6.10.2.bin", "6.10.2", "100", "100", "100",
    ]  # fmt: skip
    for phase in ("registration", "upload", "reboot"):
        assert any(line.strip().startswith(f"│ {phase}") for line in out.splitlines())
    if os.geteuid() == 0:
        names = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        ).stdout
        assert f"mfd{proc.pid % 100000}-" not in names, names


def test_demo_refuses_bad_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emulator.cli.main", "demo", "--loss", "0.9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--loss" in done.stderr
