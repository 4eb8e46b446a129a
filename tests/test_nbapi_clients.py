"""NB API clients against a live server: zeep, suds, our client and the CLI.

The server runs in a thread on 127.0.0.1 (the clients block). zeep and suds
load the WSDL the server serves, with HTTP Basic credentials, as FND test
automation does; every SOAP response sent is checked against the WSDL's XSD.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from emulator.cli.main import main as meshfleet
from emulator.cli.nbapi import nbapi
from emulator.headend.api import INVALID_PERMISSIONS, ImageInfoList, ValuePair
from emulator.nbapi.app import make_app, ssl_context_from
from emulator.nbapi.auth import Role, User, hash_password
from emulator.nbapi.client import (
    NbapiAuthError,
    NbapiClient,
    NbapiConnectionError,
    NbapiFault,
)
from emulator.nbapi.schema_check import attach_response_validator
from emulator.nbapi.testing import FakeFirmwareApi, FakeGroup, serve_in_thread

PATH = "/nbapi/meshDeviceOps"
GROUP = "default-cgmesh"
IMAGE = "cg-mesh-6.6.0.bin"


@dataclass
class Live:
    url: str
    api: FakeFirmwareApi


@pytest.fixture
def live() -> Iterator[Live]:
    api = FakeFirmwareApi()
    api.groups[GROUP] = FakeGroup(
        members=5,
        backup="cg-mesh-6.5.1.bin",
        reload_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    users = {
        "admin": User("admin", Role.OPERATOR, hash_password("s3cret", n=1024)),
        "viewer": User("viewer", Role.MONITOR, hash_password("l00k", n=1024)),
    }
    app = make_app(api, users)
    errors = attach_response_validator(app)
    with serve_in_thread(app) as base:
        yield Live(base + PATH, api)
    assert errors == []


def free_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{PATH}"


# ------------------------------------------------------------------- zeep


def zeep_client(live: Live, user: str = "admin", password: str = "s3cret") -> Any:
    zeep = pytest.importorskip("zeep")
    requests = pytest.importorskip("requests")
    session = requests.Session()
    session.auth = (user, password)
    transport = zeep.Transport(session=session)
    return zeep.Client(f"{live.url}?wsdl", transport=transport)


def test_zeep_calls_all_six_operations(live: Live) -> None:
    client = zeep_client(live)
    service = client.service
    assert client.service._binding_options["address"] == live.url

    result = service.startUpload(firmwareGroup=GROUP, firmwareImageName=IMAGE)
    assert (result.code, result.message) == (0, "Success.")

    status = service.getFirmwareUploadStatus(devType="cgmesh", firmwareGroup=GROUP)
    assert status.code == 0
    pairs = {p.name: p.value for p in status.valuePair}
    assert pairs["totalDevices"] == 5
    assert pairs["partialUpload"] == 5
    assert isinstance(pairs["partialUpload"], int)

    result = service.stopUpload(firmwareGroup=GROUP, firmwareImageName=IMAGE)
    assert result.code == 0
    result = service.stopUpload(firmwareGroup=GROUP)
    assert result.code == -9

    backup = service.setBackupFirmwareImage(
        firmwareGroup=GROUP, firmwareImageName=IMAGE
    )
    assert backup.code == 0
    assert [(p.name, p.value) for p in backup.valuePair] == [
        ("success", 5),
        ("failed", 0),
    ]

    reload = service.scheduleReload(
        firmwareGroup=GROUP,
        firmwareImageName=IMAGE,
        reloadGmtTime="2031-05-06T07:08:09",
    )
    assert reload.code == 0

    info = service.getFirmwareImageInfoList(firmwareGroup=GROUP)
    assert info.code == 0
    assert info.actionStatus == "RELOAD_SCHEDULED"
    assert info.scheduledReloadTime == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    images = {i.name: i for i in info.firmwareImageInfo}
    assert images[IMAGE].version == "6.6.0"
    assert images[IMAGE].backupCount == 5
    assert images["cg-mesh-6.5.1.bin"].runningCount == 5
    assert [c[0] for c in live.api.calls] == [
        "start_upload",
        "get_upload_status",
        "stop_upload",
        "stop_upload",
        "set_backup_image",
        "schedule_reload",
        "get_image_info_list",
    ]


def test_zeep_sees_error_codes_not_faults(live: Live) -> None:
    service = zeep_client(live).service
    result = service.startUpload(firmwareGroup="nope", firmwareImageName=IMAGE)
    assert result.code == -2
    info = service.getFirmwareImageInfoList(devType="router", firmwareGroup=GROUP)
    assert info.code == -1
    assert info.firmwareImageInfo == []
    assert info.actionStatus is None


def test_zeep_monitor_role(live: Live) -> None:
    service = zeep_client(live, "viewer", "l00k").service
    result = service.scheduleReload(
        firmwareGroup=GROUP,
        firmwareImageName=IMAGE,
        utcDateAndTime="2031-01-01 00:00:00",
    )
    assert (result.code, result.message) == (-99, INVALID_PERMISSIONS)
    assert service.getFirmwareUploadStatus(firmwareGroup=GROUP).code == 0


def test_zeep_cannot_load_wsdl_without_credentials(live: Live) -> None:
    requests = pytest.importorskip("requests")
    with pytest.raises(requests.HTTPError):
        zeep_client(live, "admin", "wrong")


# ------------------------------------------------------------------- suds


def suds_client(live: Live, user: str = "admin", password: str = "s3cret") -> Any:
    suds_client_module = pytest.importorskip("suds.client")
    client = suds_client_module.Client(
        f"{live.url}?wsdl", username=user, password=password, cache=None
    )
    client.set_options(location=live.url)
    return client


def test_suds_calls_all_six_operations(live: Live) -> None:
    service = suds_client(live).service
    assert service.startUpload(firmwareGroup=GROUP, firmwareImageName=IMAGE).code == 0
    status = service.getFirmwareUploadStatus(firmwareGroup=GROUP)
    assert status.code == 0
    assert {p.name: p.value for p in status.valuePair}["partialUpload"] == 5
    assert service.stopUpload(firmwareGroup=GROUP).code == 0
    backup = service.setBackupFirmwareImage(
        firmwareGroup=GROUP, firmwareImageName=IMAGE
    )
    assert backup.code == 0 and backup.message == "Success."
    reload = service.scheduleReload(
        firmwareGroup=GROUP,
        firmwareImageName=IMAGE,
        reloadGmtTime="2031-05-06T07:08:09",
    )
    assert reload.code == 0
    info = service.getFirmwareImageInfoList(firmwareGroup=GROUP)
    assert info.code == 0
    assert info.actionStatus == "RELOAD_SCHEDULED"
    assert info.scheduledReloadTime.replace(tzinfo=UTC) == datetime(
        2031, 5, 6, 7, 8, 9, tzinfo=UTC
    )
    assert {i.name for i in info.firmwareImageInfo} == {IMAGE, "cg-mesh-6.5.1.bin"}
    assert live.api.calls[0] == ("start_upload", (None, GROUP, IMAGE))


def test_suds_monitor_role(live: Live) -> None:
    service = suds_client(live, "viewer", "l00k").service
    result = service.startUpload(firmwareGroup=GROUP, firmwareImageName=IMAGE)
    assert (result.code, result.message) == (-99, INVALID_PERMISSIONS)


# ------------------------------------------------------------- our client


def test_client_results_are_typed(live: Live) -> None:
    client = NbapiClient(live.url, "admin", "s3cret")
    assert client.start_upload("cgmesh", GROUP, IMAGE).code == 0
    status = client.get_upload_status(None, GROUP)
    assert status.ok and status.data is not None
    assert ValuePair("partialUpload", 5) in status.data
    info = client.get_image_info_list(None, GROUP)
    assert isinstance(info.data, ImageInfoList)
    assert info.data.action_status == "UPLOADING"
    assert info.data.scheduled_reload == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    missing = client.get_image_info_list(None, "nope")
    assert (missing.code, missing.data) == (-2, None)
    reload = client.schedule_reload(None, GROUP, IMAGE, "2020-01-01T00:00:00")
    assert (reload.code, reload.data) == (-10, None)


async def test_client_round_trips_the_fake_results(live: Live) -> None:
    """What the API returned is what the client parses, operation by operation."""
    client = NbapiClient(live.url, "admin", "s3cret")
    reference = FakeFirmwareApi()
    reference.groups = {GROUP: FakeGroup(members=5, backup="cg-mesh-6.5.1.bin")}
    live.api.groups = {GROUP: FakeGroup(members=5, backup="cg-mesh-6.5.1.bin")}
    assert client.get_image_info_list(None, GROUP) == (
        await reference.get_image_info_list(None, GROUP)
    )
    assert client.set_backup_image(None, GROUP, IMAGE) == (
        await reference.set_backup_image(None, GROUP, IMAGE)
    )


def test_client_keeps_its_connection_between_calls(live: Live) -> None:
    client = NbapiClient(live.url, "admin", "s3cret")
    assert client.get_upload_status(None, GROUP).ok
    first = client._idle[0].sock.getsockname()
    assert client.get_image_info_list(None, GROUP).ok
    assert client.stop_upload(None, GROUP).code == -9  # the group is not active
    assert [c.sock.getsockname() for c in client._idle] == [first]
    client.close()
    assert client._idle == []
    assert client.get_upload_status(None, GROUP).ok  # a new connection


def test_client_sends_again_when_the_server_closed_the_kept_connection(
    live: Live,
) -> None:
    """A server that answers with keep-alive and then hangs up (an idle
    timeout): the next call goes out once more on a new connection."""
    expected = NbapiClient(live.url, "admin", "s3cret").stop_upload(None, GROUP)
    canned = _raw_post(live.url, "stopUpload")
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            accepted.append(1)
            with conn:
                _read_request(conn)
                conn.sendall(canned)  # keep-alive headers, then close

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}{PATH}"
    client = NbapiClient(url, "admin", "s3cret", timeout=10)
    try:
        assert client.stop_upload(None, GROUP) == expected
        time.sleep(0.2)  # the server has closed the kept connection by now
        assert client.stop_upload(None, GROUP) == expected
    finally:
        thread.join(10)
        listener.close()
    assert len(accepted) == 2


def _raw_post(url: str, operation: str) -> bytes:
    """The whole HTTP answer of the live server to ``operation`` (raw bytes)."""
    from emulator.nbapi import soap
    from emulator.nbapi.client import basic_auth

    parts = urllib.parse.urlsplit(url)
    body = soap.build_request(operation, {soap.GROUP: GROUP})
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f'Content-Type: {soap.CONTENT_TYPE}\r\nSOAPAction: ""\r\n'
        f"Authorization: {basic_auth('admin', 's3cret')}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(head.encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(65536)
        header, _, rest = answer.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":", 1)[1]
                for line in header.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        while len(rest) < length:
            rest += s.recv(65536)
    assert b"keep-alive" in header.lower() or b"connection: close" not in header.lower()
    return header + b"\r\n\r\n" + rest


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    header, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        body += conn.recv(65536)


def test_client_errors(live: Live) -> None:
    with pytest.raises(NbapiAuthError):
        NbapiClient(live.url, "admin", "wrong").stop_upload(None, GROUP)
    with pytest.raises(NbapiConnectionError):
        NbapiClient(free_port_url(), "admin", "x", timeout=5).stop_upload(None, GROUP)
    client = NbapiClient(live.url, "admin", "s3cret")
    with pytest.raises(NbapiFault) as caught:
        client.call("stopUpload", {})
    assert caught.value.faultcode == "soap:Client"
    assert "missing firmwareGroup" in caught.value.faultstring


# -------------------------------------------------------------------- CLI


def run_cli(live_url: str, *args: str, password: str | None = "s3cret") -> Any:
    env = {"MESHFLEET_NBAPI_URL": live_url, "MESHFLEET_NBAPI_PASSWORD": password}
    return CliRunner().invoke(nbapi, list(args), env=env, catch_exceptions=False)


def test_cli_start_upload_and_status(live: Live) -> None:
    result = run_cli(live.url, "start-upload", "--group", GROUP, "--image", IMAGE)
    assert result.exit_code == 0, result.output
    assert "code 0" in result.output
    assert live.api.calls == [("start_upload", ("cgmesh", GROUP, IMAGE))]
    result = run_cli(live.url, "upload-status", "--group", GROUP)
    assert result.exit_code == 0
    assert "partialUpload" in result.output


def test_cli_json_output(live: Live) -> None:
    result = run_cli(live.url, "image-info", "--group", GROUP, "--json")
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["code"] == 0
    assert document["operation"] == "getFirmwareImageInfoList"
    assert document["data"]["scheduledReloadTime"] == "2030-01-02T03:04:05Z"
    names = {i["name"] for i in document["data"]["images"]}
    assert names == {"cg-mesh-6.5.1.bin"}


def test_cli_nonzero_code_exits_1(live: Live) -> None:
    result = run_cli(live.url, "set-backup", "--group", GROUP, "--image", "x.bin")
    assert result.exit_code == 1
    assert "code -3" in result.output
    result = run_cli(live.url, "stop-upload", "--group", GROUP)
    assert result.exit_code == 1


def test_cli_schedule_reload(live: Live) -> None:
    args = ("schedule-reload", "--group", GROUP, "--image", IMAGE)
    result = run_cli(live.url, *args, "--at", "2031-01-01T00:00:00")
    assert result.exit_code == 0
    assert live.api.calls[-1] == (
        "schedule_reload",
        ("cgmesh", GROUP, IMAGE, "2031-01-01T00:00:00"),
    )
    result = run_cli(live.url, *args, "--at", "soon")
    assert result.exit_code == 1
    assert "code -4" in result.output


def test_cli_monitor_role_is_refused(live: Live) -> None:
    result = run_cli(
        live.url,
        "start-upload",
        "--group",
        GROUP,
        "--image",
        IMAGE,
        "--user",
        "viewer",
        password="l00k",
    )
    assert result.exit_code == 1
    assert INVALID_PERMISSIONS in result.output


@pytest.mark.parametrize("case", ["wrong password", "no server"])
def test_cli_transport_errors_exit_2(live: Live, case: str) -> None:
    url = live.url if case == "wrong password" else free_port_url()
    result = CliRunner().invoke(
        nbapi,
        ["stop-upload", "--group", GROUP, "--url", url],
        env={"MESHFLEET_NBAPI_PASSWORD": "wrong"},
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "meshfleet nbapi:" in result.output


def test_cli_prompts_for_the_password(live: Live) -> None:
    result = CliRunner().invoke(
        nbapi,
        ["upload-status", "--group", GROUP, "--url", live.url],
        input="s3cret\n",
        env={"MESHFLEET_NBAPI_PASSWORD": None},
    )
    assert result.exit_code == 0, result.output


def test_cli_through_the_meshfleet_entry_point(live: Live) -> None:
    result = CliRunner().invoke(
        meshfleet,
        ["nbapi", "upload-status", "--group", GROUP, "--url", live.url, "--json"],
        env={"MESHFLEET_NBAPI_PASSWORD": "s3cret"},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["code"] == 0


def test_cli_hash_password() -> None:
    result = CliRunner().invoke(
        nbapi, ["hash-password"], env={"MESHFLEET_NBAPI_PASSWORD": "pw"}
    )
    assert result.exit_code == 0
    assert result.output.startswith("scrypt$16384$8$1$")


# ------------------------------------------------------------------ HTTPS


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (PEM cert and key files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_https_with_ssl_context_from(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    users = {"admin": User("admin", Role.OPERATOR, hash_password("pw", n=1024))}
    app = make_app(FakeFirmwareApi(), users)
    with serve_in_thread(app, ssl_context=ssl_context_from(cert, key)) as base:
        url = base + PATH
        result = CliRunner().invoke(
            nbapi,
            ["upload-status", "--group", GROUP, "--url", url, "--cafile", str(cert)],
            env={"MESHFLEET_NBAPI_PASSWORD": "pw"},
        )
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(
            nbapi,
            ["upload-status", "--group", GROUP, "--url", url],
            env={"MESHFLEET_NBAPI_PASSWORD": "pw"},
        )
        assert result.exit_code == 2  # untrusted certificate
        result = CliRunner().invoke(
            nbapi,
            ["upload-status", "--group", GROUP, "--url", url, "--insecure"],
            env={"MESHFLEET_NBAPI_PASSWORD": "pw"},
        )
        assert result.exit_code == 0, result.output
