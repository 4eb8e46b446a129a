"""``meshfleet bench SCENARIO``: benchmarks against the limits of this machine.

A thin command over :mod:`emulator.lab.bench` (also run by ``tools/bench.py``):
one JSON line per run, then the medians and the targets. Scenarios:
requests, register, upload, api, reload, memory, soak.
"""

from __future__ import annotations

from pathlib import Path

import click

from emulator.lab.bench import SCENARIOS, BenchOptions, run
from emulator.lab.procs import LabError


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of sizes") from None


@click.command()
@click.argument("scenario", type=click.Choice(SCENARIOS))
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--devices", type=click.IntRange(1), help="Default per scenario.")
@click.option("--seconds", type=float, default=3.0, help="requests: per server.")
@click.option("--window", type=click.IntRange(1), default=64, help="requests.")
@click.option("--sizes", default="10000,100000", show_default=True, help="memory.")
@click.option("--loss", type=click.FloatRange(0, 0.5), default=0.02, help="upload.")
@click.option("--image-kib", type=click.IntRange(4), default=256, help="upload.")
@click.option("--minutes", type=click.FloatRange(0.1), default=10.0, help="soak.")
@click.option("--timeout", type=click.FloatRange(1), default=300.0, help="Per phase.")
@click.option("--logs", type=click.Path(file_okay=False, path_type=Path))
def bench(
    scenario: str,
    runs: int,
    devices: int | None,
    seconds: float,
    window: int,
    sizes: str,
    loss: float,
    image_kib: int,
    minutes: float,
    timeout: float,
    logs: Path | None,
) -> None:
    """Run SCENARIO --runs times; JSON lines, then medians next to the targets."""
    opts = BenchOptions(
        runs=runs,
        devices=devices,
        seconds=seconds,
        window=window,
        sizes=_sizes(sizes),
        loss=loss,
        image_kib=image_kib,
        minutes=minutes,
        timeout=timeout,
        log_dir=logs,
    )
    try:
        run(scenario, opts, lambda line: click.echo(line))
    except LabError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
