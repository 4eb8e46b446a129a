"""Users, roles and HTTP Basic authentication of the NB API (access layer).

FND's Northbound API authenticates every call with HTTP Basic credentials and
applies role based access control: a caller whose role lacks the permission
gets return code -99 "Invalid user permissions" (Table 1 of
``shared/reference/fnd-nbapi-firmware-upgrade.txt``), not an HTTP error.

Passwords are stored as salted scrypt hashes in a self-describing string,
``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``. Users come from configuration::

    [nbapi.users.admin]
    role = "operator"          # or "monitor"
    password_hash = "scrypt$16384$8$1$...$..."

This module is pure (no aiohttp): the server adapter calls
:func:`parse_basic` and :class:`Authenticator`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

SCHEME = "scrypt"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
#: Bounds on parameters read back from configuration (a hash string must
#: not be able to make verification eat memory or minutes).
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16
REALM = "meshfleet NB API"


class Role(StrEnum):
    """NB API roles: ``monitor`` reads, ``operator`` may do everything."""

    MONITOR = "monitor"
    OPERATOR = "operator"


#: Operations each role may call (SOAP operation names).
READ_OPERATIONS = frozenset({"getFirmwareUploadStatus", "getFirmwareImageInfoList"})
WRITE_OPERATIONS = frozenset(
    {"startUpload", "stopUpload", "setBackupFirmwareImage", "scheduleReload"}
)
PERMISSIONS: Mapping[Role, frozenset[str]] = {
    Role.MONITOR: READ_OPERATIONS,
    Role.OPERATOR: READ_OPERATIONS | WRITE_OPERATIONS,
}


def may_call(role: Role, operation: str) -> bool:
    """Whether ``role`` may call the SOAP ``operation``."""
    return operation in PERMISSIONS.get(role, frozenset())


@dataclass(frozen=True, slots=True)
class User:
    """One NB API user: name, role and stored password hash."""

    name: str
    role: Role
    password_hash: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> str:
    """A salted scrypt hash of ``password`` as ``scrypt$n$r$p$salt$hash``."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=size
    )


@dataclass(frozen=True, slots=True)
class _Parsed:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _parse_hash(stored: str) -> _Parsed:
    """Split and check a stored hash string; ValueError when unusable."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("not a scrypt$n$r$p$salt$hash string")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"bad scrypt hash field: {exc}") from None
    if not (1 < n <= _MAX_N and n & (n - 1) == 0):
        raise ValueError("scrypt n must be a power of two up to 2**20")
    if not (0 < r <= _MAX_R and 0 < p <= _MAX_P) or not salt or len(digest) < 16:
        raise ValueError("scrypt r, p, salt or hash out of range")
    return _Parsed(n, r, p, salt, digest)


def check_hash(stored: str) -> None:
    """Raise ValueError unless ``stored`` is a usable password hash."""
    _parse_hash(stored)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison).

    An unusable stored string verifies nothing (and is logged).
    """
    try:
        parsed = _parse_hash(stored)
    except ValueError as exc:
        log.warning("unusable password hash: %s", exc)
        return False
    size = len(parsed.digest)
    digest = _scrypt(password, parsed.salt, parsed.n, parsed.r, parsed.p, size)
    return hmac.compare_digest(digest, parsed.digest)


def users_from_config(table: Mapping[str, Any]) -> dict[str, User]:
    """Users from a config table ``{name: {role, password_hash}}``.

    Raises ValueError naming the user on an unknown role or a bad hash.
    """
    users: dict[str, User] = {}
    for name, entry in table.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"nbapi user {name!r}: expected a table")
        try:
            role = Role(str(entry.get("role", "")).lower())
            stored = str(entry["password_hash"])
            check_hash(stored)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"nbapi user {name!r}: {exc}") from None
        users[name] = User(name=name, role=role, password_hash=stored)
    return users


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def challenge() -> str:
    """The ``WWW-Authenticate`` value of a 401 answer."""
    return f'Basic realm="{REALM}", charset="UTF-8"'


class Authenticator:
    """Checks credentials against the users, remembering recent successes.

    scrypt costs tens of milliseconds by design; a small cache keyed by a
    per-process HMAC of the password spares repeated calls of one client
    from paying it each time. Failures are never cached.
    """

    def __init__(self, users: Mapping[str, User], *, cache_size: int = 256) -> None:
        self._users = users
        self._key = secrets.token_bytes(32)
        self._ok: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._dummy = hash_password(secrets.token_hex(8))

    def _cache_key(self, user: User, password: str) -> tuple[str, str, bytes]:
        mac = hmac.new(self._key, password.encode("utf-8"), hashlib.sha256)
        return (user.name, user.password_hash, mac.digest())

    def cached(self, name: str, password: str) -> User | None:
        """The user if these credentials verified recently, else None."""
        user = self._users.get(name)
        if user is None:
            return None
        key = self._cache_key(user, password)
        with self._lock:
            if key not in self._ok:
                return None
            self._ok.move_to_end(key)
        return user

    def verify(self, name: str, password: str) -> User | None:
        """The user if the credentials are right (slow: run it in a thread)."""
        user = self._users.get(name)
        if user is None:
            verify_password(password, self._dummy)  # same cost as a real check
            return None
        if not verify_password(password, user.password_hash):
            return None
        key = self._cache_key(user, password)
        with self._lock:
            self._ok[key] = None
            while len(self._ok) > self._cache_size:
                self._ok.popitem(last=False)
        return user
