"""``meshfleet fleet``: run an emulated CG-mesh fleet, list it (layer ``cli``).

``meshfleet fleet run [CONFIG]`` runs :class:`emulator.fleet.runtime.Fleet`
until SIGTERM or Ctrl-C, then stops cleanly (final snapshot with ``--state``,
local route removed). ``meshfleet fleet inventory [CONFIG]`` prints the
devices (``table``, ``csv`` or the FND import CSV ``fnd``). Flags override the
config file; without a file the defaults give a working fleet. A bad config
ends with every problem listed and exit status 2, never a traceback.

Also runnable as ``python -m emulator.cli.fleet``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from emulator.fleet.config import ConfigError, FleetConfig, load_config, parse_address
from emulator.fleet.config import with_overrides as _with_overrides
from emulator.fleet.inventory import format_inventory, plan_fleet
from emulator.fleet.sharding import in_shard, parse_shard

logger = logging.getLogger(__name__)

_CONFIG = click.Path(exists=False, dir_okay=False, path_type=Path)


def _fail(message: str, status: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(status)


def _load(path: Path | None, **overrides: Any) -> FleetConfig:
    try:
        config = load_config(path)
        return _with_overrides(config, **overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ValueError as exc:
        _fail(f"--shard: {exc}")


@click.group()
def fleet() -> None:
    """Emulate thousands of CSMP endpoints in one process."""


@fleet.command()
@click.argument("config", required=False, type=_CONFIG)
@click.option("--devices", type=click.IntRange(0), help="Number of devices.")
@click.option("--prefix", help="Address prefix, e.g. fd00:6d66::/64.")
@click.option("--nms", help="NMS address, e.g. [::1]:61628.")
@click.option("--shard", "shard_text", help="i/n: emulate slice i of n (auto/n).")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path))
@click.option("--metrics-port", type=click.IntRange(0, 65535))
@click.option("--addressing", type=click.Choice(["auto", "prefix", "loopback-ports"]))
@click.option("--port", type=click.IntRange(0, 65535), help="Device CSMP port.")
def run(
    config: Path | None,
    devices: int | None,
    prefix: str | None,
    nms: str | None,
    shard_text: str | None,
    state: Path | None,
    metrics_port: int | None,
    addressing: str | None,
    port: int | None,
) -> None:
    """Run the fleet until SIGTERM or Ctrl-C."""
    nms_addr = None
    if nms is not None:
        try:
            nms_addr = parse_address(nms)
        except ValueError as exc:
            _fail(f"--nms: {exc}")
    cfg = _load(
        config,
        devices=devices,
        prefix=prefix,
        nms=nms_addr,
        shard=_shard(shard_text),
        state_dir=str(state) if state else None,
        metrics_port=metrics_port,
        addressing=addressing,
        port=port,
    )
    _use_uvloop()
    try:
        asyncio.run(_run(cfg))
    except ConfigError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot start the fleet: {exc}", 1)


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _run(config: FleetConfig) -> None:
    from emulator.fleet.runtime import Fleet
    from emulator.gctune import tune_for_long_lived_heap

    the_fleet = Fleet(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await the_fleet.start()
    tune_for_long_lived_heap()
    click.echo(
        f"fleet: {len(the_fleet.devices)} devices, {the_fleet.mode} addressing, "
        f"NMS [{config.nms[0]}]:{config.nms[1]}",
        err=True,
    )
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await the_fleet.stop()


@fleet.command()
@click.argument("config", required=False, type=_CONFIG)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "fnd"]), default="table"
)
@click.option("--devices", type=click.IntRange(0))
@click.option("--prefix")
@click.option("--shard", "shard_text")
def inventory(
    config: Path | None,
    fmt: str,
    devices: int | None,
    prefix: str | None,
    shard_text: str | None,
) -> None:
    """List EUI-64, address, hardware id and model of every device."""
    shard = _shard(shard_text)
    cfg = _load(config, devices=devices, prefix=prefix, shard=shard)
    planned = [p for p in plan_fleet(cfg) if in_shard(p.eui64, cfg.shard)]
    click.echo(format_inventory(planned, fmt, cfg.seed), nl=False)


if __name__ == "__main__":  # python -m emulator.cli.fleet
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(fleet())
