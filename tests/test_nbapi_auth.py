"""Users, password hashes and Basic parsing of the NB API (emulator.nbapi.auth)."""

from __future__ import annotations

import base64

import pytest

from emulator.nbapi.auth import (
    Authenticator,
    Role,
    User,
    check_hash,
    hash_password,
    may_call,
    parse_basic,
    users_from_config,
    verify_password,
)
from emulator.nbapi.soap import OPERATIONS


def test_hash_is_salted_and_self_describing() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32


def test_verify() -> None:
    stored = hash_password("s3cret", n=1024)
    assert verify_password("s3cret", stored)
    assert not verify_password("S3cret", stored)
    assert not verify_password("", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "bcrypt$1$2$3$AAAA$AAAA",
        "scrypt$1000$8$1$AAAAAAAA$" + "A" * 44,  # n not a power of two
        "scrypt$2097152$8$1$AAAAAAAA$" + "A" * 44,  # n too large
        "scrypt$1024$8$1$!!$" + "A" * 44,
    ],
)
def test_unusable_hashes_verify_nothing(stored: str) -> None:
    assert not verify_password("x", stored)
    with pytest.raises(ValueError):
        check_hash(stored)


def test_users_from_config() -> None:
    stored = hash_password("pw", n=1024)
    users = users_from_config(
        {
            "admin": {"role": "operator", "password_hash": stored},
            "viewer": {"role": "MONITOR", "password_hash": stored},
        }
    )
    assert users["admin"] == User("admin", Role.OPERATOR, stored)
    assert users["viewer"].role is Role.MONITOR


@pytest.mark.parametrize(
    "entry",
    [{"role": "root", "password_hash": "x"}, {"role": "monitor"}, "operator"],
)
def test_bad_user_entries(entry: object) -> None:
    with pytest.raises(ValueError, match="bob"):
        users_from_config({"bob": entry})


def test_permissions() -> None:
    reads = {"getFirmwareUploadStatus", "getFirmwareImageInfoList"}
    for name in OPERATIONS:
        assert may_call(Role.OPERATOR, name)
        assert may_call(Role.MONITOR, name) == (name in reads)


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        (_basic("admin:pw:with:colons"), ("admin", "pw:with:colons")),
        ("basic " + base64.b64encode(b"a:").decode(), ("a", "")),
        (_basic("nocolon"), None),
        ("Bearer abc", None),
        ("Basic !!!", None),
        (_basic("\u00fcser:p\u00e4ss"), ("\u00fcser", "p\u00e4ss")),
    ],
)
def test_parse_basic(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic(header) == expected


def test_authenticator_caches_successes_only() -> None:
    stored = hash_password("pw", n=1024)
    auth = Authenticator({"admin": User("admin", Role.OPERATOR, stored)})
    assert auth.cached("admin", "pw") is None
    assert auth.verify("admin", "bad") is None
    assert auth.cached("admin", "bad") is None
    user = auth.verify("admin", "pw")
    assert user is not None and user.name == "admin"
    assert auth.cached("admin", "pw") == user
    assert auth.verify("nobody", "pw") is None
