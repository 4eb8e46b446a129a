"""``meshfleet demo``: parse options, run :class:`emulator.lab.demo.Demo`."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from emulator.lab.demo import Demo, DemoOptions, DemoResult
from emulator.lab.procs import LabError
from emulator.lab.progress import make_progress


@click.command()
@click.option("--devices", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--loss", default=0.02, show_default=True, type=click.FloatRange(0, 0.5))
@click.option(
    "--image-kib", default=256, show_default=True, type=click.IntRange(1, 512)
)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--mode",
    type=click.Choice(["auto", "netns", "loopback"]),
    default="auto",
    show_default=True,
    help="auto: network namespaces when root, loopback otherwise.",
)
@click.option("--timeout", default=600.0, show_default=True, help="Per phase (s).")
@click.option(
    "--logs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the head-end and fleet logs in this directory.",
)
def demo(
    devices: int,
    loss: float,
    image_kib: int,
    seed: int,
    mode: str,
    timeout: float,
    logs: Path | None,
) -> None:
    """Upgrade an emulated fleet end to end through the SOAP NB API."""
    opts = DemoOptions(devices, loss, image_kib, seed, mode, timeout, log_dir=logs)
    # SIGTERM unwinds like Ctrl-C, so children and namespaces are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    progress = make_progress()
    try:
        result = Demo(opts, progress).run()
    except LabError as exc:
        progress.close()
        click.echo(f"demo failed: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        progress.close()
        click.echo("demo interrupted; everything it started is stopped", err=True)
        sys.exit(130)
    progress.close()
    _summary(result, opts)
    sys.exit(0 if result.ok else 1)


def _summary(result: DemoResult, opts: DemoOptions) -> None:
    console = Console(highlight=False)
    table = Table(title=f"meshfleet demo: {opts.devices} devices ({result.mode})")
    table.add_column("image")
    table.add_column("version")
    table.add_column("running", justify="right")
    table.add_column("uploaded", justify="right")
    table.add_column("backup", justify="right")
    for image in result.images.images if result.images else []:
        table.add_row(
            image.name, image.version, str(image.running), str(image.uploaded),
            str(image.backup),
        )  # fmt: skip
    console.print(table)
    timings = Table(title="timings")
    timings.add_column("phase")
    timings.add_column("seconds", justify="right")
    for phase, seconds in result.timings.items():
        timings.add_row(phase, f"{seconds:.1f}")
    console.print(timings)
    verdict = "PASS" if result.ok else "FAIL"
    console.print(f"{verdict}: {result.message}", markup=False)
