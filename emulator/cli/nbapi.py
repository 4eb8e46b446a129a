"""``meshfleet nbapi``: call the Firmware Upgrade NB API (command-line layer).

One subcommand per operation of FND's ``meshDeviceOps`` SOAP service
(``shared/reference/fnd-nbapi-firmware-upgrade.txt``): start-upload,
stop-upload, upload-status, image-info, set-backup, schedule-reload; plus
hash-password to make a user entry for the server's configuration.

The password comes from ``MESHFLEET_NBAPI_PASSWORD`` or a prompt. Exit status:
0 when the return code is 0, 1 for any other return code, 2 when no result
came back (connection error, HTTP 401, SOAP fault, bad response).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from emulator.headend.api import ImageInfoList, OpResult, ValuePair
from emulator.nbapi.auth import hash_password
from emulator.nbapi.client import DEFAULT_URL, NbapiClient, NbapiError
from emulator.nbapi.soap import format_utc

log = logging.getLogger(__name__)

URL_ENV = "MESHFLEET_NBAPI_URL"
PASSWORD_ENV = "MESHFLEET_NBAPI_PASSWORD"
EXIT_FAILED = 1
EXIT_NO_RESULT = 2


@dataclass(frozen=True, slots=True)
class _Settings:
    url: str
    user: str
    as_json: bool
    dev_type: str
    timeout: float
    insecure: bool
    cafile: str | None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.url.lower().startswith("https:"):
            return None
        context = ssl.create_default_context(cafile=self.cafile)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def client(self) -> NbapiClient:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            password = click.prompt(f"NB API password for {self.user}", hide_input=True)
        return NbapiClient(
            self.url,
            self.user,
            password,
            timeout=self.timeout,
            ssl_context=self.ssl_context(),
        )


_OPTIONS = (
    click.option(
        "--url",
        envvar=URL_ENV,
        default=DEFAULT_URL,
        show_default=True,
        help=f"Service endpoint (env {URL_ENV}).",
    ),
    click.option("--user", default="admin", show_default=True, help="NB API user."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    click.option(
        "--dev-type", default="cgmesh", show_default=True, help="The devType sent."
    ),
    click.option("--timeout", type=float, default=30.0, show_default=True),
    click.option("--insecure", is_flag=True, help="Skip TLS certificate checks."),
    click.option(
        "--cafile", type=click.Path(dir_okay=False), help="CA bundle for HTTPS."
    ),
)


def _connection(func: Callable[..., None]) -> Callable[..., None]:
    """Add the common options; pass them to ``func`` as one _Settings."""

    @functools.wraps(func)
    def wrapper(
        url: str,
        user: str,
        as_json: bool,
        dev_type: str,
        timeout: float,
        insecure: bool,
        cafile: str | None,
        **kwargs: Any,
    ) -> None:
        settings = _Settings(url, user, as_json, dev_type, timeout, insecure, cafile)
        func(settings, **kwargs)

    command: Callable[..., None] = wrapper
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


# ------------------------------------------------------------------ output


def _jsonable(data: object) -> object:
    if isinstance(data, list):
        return [
            {"name": p.name, "value": p.value} for p in data if isinstance(p, ValuePair)
        ]
    if isinstance(data, ImageInfoList):
        reload_at = data.scheduled_reload
        return {
            "images": [
                {
                    "name": i.name,
                    "version": i.version,
                    "runningCount": i.running,
                    "uploadedCount": i.uploaded,
                    "backupCount": i.backup,
                }
                for i in data.images
            ],
            "actionStatus": data.action_status,
            "scheduledReloadTime": format_utc(reload_at) if reload_at else None,
        }
    return None


def _print_json(operation: str, result: OpResult[Any]) -> None:
    document = {
        "operation": operation,
        "code": result.code,
        "message": result.message,
        "data": _jsonable(result.data),
    }
    click.echo(json.dumps(document, indent=2))


def _pairs_table(pairs: list[ValuePair]) -> Table:
    table = Table("name", "value")
    for pair in pairs:
        table.add_row(pair.name, str(pair.value))
    return table


def _images_table(info: ImageInfoList) -> Table:
    table = Table("image", "version", "running", "uploaded", "backup")
    for i in info.images:
        row = (i.name, i.version, str(i.running), str(i.uploaded), str(i.backup))
        table.add_row(*row)
    return table


def _print_text(operation: str, result: OpResult[Any]) -> None:
    console = Console(soft_wrap=True)
    style = "green" if result.ok else "red"
    console.print(f"{operation}: [{style}]code {result.code}[/] {result.message}")
    data = result.data
    if isinstance(data, ImageInfoList):
        console.print(_images_table(data))
        console.print(f"action status: {data.action_status}")
        if data.scheduled_reload is not None:
            console.print(f"scheduled reload: {format_utc(data.scheduled_reload)}")
    elif isinstance(data, list) and data:
        console.print(_pairs_table(data))


def _run(
    settings: _Settings,
    operation: str,
    call: Callable[[NbapiClient], OpResult[Any]],
) -> None:
    """Call, print, and exit with the status the result deserves."""
    client = settings.client()
    try:
        result = call(client)
    except NbapiError as exc:
        click.echo(f"meshfleet nbapi: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_NO_RESULT) from None
    if settings.as_json:
        _print_json(operation, result)
    else:
        _print_text(operation, result)
    raise click.exceptions.Exit(0 if result.ok else EXIT_FAILED)


# ---------------------------------------------------------------- commands

_GROUP = click.option("--group", required=True, help="Firmware group name.")
_IMAGE = click.option("--image", required=True, help="Firmware image file name.")


@click.group()
def nbapi() -> None:
    """Call the head-end's Firmware Upgrade NB API (SOAP meshDeviceOps)."""


@nbapi.command("start-upload")
@_GROUP
@_IMAGE
@_connection
def start_upload(settings: _Settings, group: str, image: str) -> None:
    """Start uploading IMAGE to every member of GROUP."""
    _run(
        settings,
        "startUpload",
        lambda c: c.start_upload(settings.dev_type, group, image),
    )


@nbapi.command("stop-upload")
@_GROUP
@_connection
def stop_upload(settings: _Settings, group: str) -> None:
    """Stop the group's upload in progress."""
    _run(settings, "stopUpload", lambda c: c.stop_upload(settings.dev_type, group))


@nbapi.command("upload-status")
@_GROUP
@_connection
def upload_status(settings: _Settings, group: str) -> None:
    """How many members are in each upload state."""
    _run(
        settings,
        "getFirmwareUploadStatus",
        lambda c: c.get_upload_status(settings.dev_type, group),
    )


@nbapi.command("image-info")
@_GROUP
@_connection
def image_info(settings: _Settings, group: str) -> None:
    """Images seen in the group, its action status and scheduled reload."""
    _run(
        settings,
        "getFirmwareImageInfoList",
        lambda c: c.get_image_info_list(settings.dev_type, group),
    )


@nbapi.command("set-backup")
@_GROUP
@_IMAGE
@_connection
def set_backup(settings: _Settings, group: str, image: str) -> None:
    """Make IMAGE the members' backup image."""
    _run(
        settings,
        "setBackupFirmwareImage",
        lambda c: c.set_backup_image(settings.dev_type, group, image),
    )


@nbapi.command("schedule-reload")
@_GROUP
@_IMAGE
@click.option(
    "--at",
    "at",
    required=True,
    help="Reload time, UTC: YYYY-MM-DDTHH:MM:SS (a space or * also separates).",
)
@_connection
def schedule_reload(settings: _Settings, group: str, image: str, at: str) -> None:
    """Have the members reload into IMAGE at the given UTC time."""
    _run(
        settings,
        "scheduleReload",
        lambda c: c.schedule_reload(settings.dev_type, group, image, at),
    )


@nbapi.command("hash-password")
def hash_password_command() -> None:
    """Prompt for a password; print its hash for the users configuration."""
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    click.echo(hash_password(password))
