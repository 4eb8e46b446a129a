"""Entry point of the ``meshfleet`` command; one module per command group."""

from __future__ import annotations

import importlib
import logging

import click

#: command name -> "module:attribute" of its click command or group
_COMMANDS = {
    "image": "emulator.cli.image:image",
    "fleet": "emulator.cli.fleet:fleet",
    "headend": "emulator.cli.headend:headend",
    "nbapi": "emulator.cli.nbapi:nbapi",
    "demo": "emulator.cli.demo:demo",
    "bench": "emulator.cli.bench:bench",
}


class _LazyGroup(click.Group):
    """Imports a command group's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug).")
def main(verbose: int) -> None:
    """meshfleet: emulate a CG-mesh fleet and an FND firmware head-end."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


if __name__ == "__main__":
    main()
