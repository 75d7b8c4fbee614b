"""Who may do what on the operator screen: users, PINs, roles and login sessions.

Two roles: ``operator`` runs the line (start, pause, stop, reset, acknowledge alarms, choose a
recipe); ``engineer`` may do all of that and also change configuration and calibration.

Users live in a JSON file (``users.json``) that stores, per user, a name, a role and a salted
scrypt hash of the PIN — never the PIN. Manage it with :class:`UserStore`::

    store = UserStore.load("users.json")            # or UserStore(path) for a new file
    store.add("maria", "operator", "4711")
    store.save()

PINs are 4 to 8 digits, and unique on one line: the screen logs in with the PIN alone (a PIN pad
is what works with wet gloves), so the PIN identifies the user.

Simulator defaults (:meth:`UserStore.simulator_defaults`, used when the line runs on the
simulator without a users file; never use them on a real line):

=========  ========  =====
user       role      PIN
=========  ========  =====
operator   operator  1111
engineer   engineer  2222
=========  ========  =====

A login gives a :class:`Session` with a random token, carried as the ``scallop_session`` cookie
(the page) or as ``Authorization: Bearer <token>`` (scripts). Sessions expire after a period
without use; repeated wrong PINs lock the PIN pad for a while.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scallop.errors import DataError, ScallopError

Role = Literal["operator", "engineer"]
ROLES: tuple[str, ...] = ("operator", "engineer")
# Higher rank may do everything a lower rank may.
_RANK = {"operator": 1, "engineer": 2}

PIN_MIN, PIN_MAX = 4, 8
# scrypt cost: ~50 ms per check on one core, enough to make guessing a 4-digit PIN from a
# stolen users file slow-ish while keeping a login snappy. Stored per user so it can change.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1

SIMULATOR_USERS = (("operator", "operator", "1111"), ("engineer", "engineer", "2222"))


class AuthError(ScallopError):
    http_status = 401

    """Not logged in, a wrong PIN or an expired session (HTTP 401)."""


class Forbidden(ScallopError):
    http_status = 403

    """Logged in, but the role may not do this (HTTP 403)."""


class LockedOut(AuthError):
    """Too many wrong PINs in a row; ``retry_after_s`` says when to try again (HTTP 429)."""

    def __init__(self, msg: str, retry_after_s: float) -> None:
        super().__init__(msg)
        self.retry_after_s = retry_after_s


class UserFileError(DataError):
    """A users file that cannot be read or a user that cannot be added; the message names it."""


def check_pin(pin: object) -> str:
    if not isinstance(pin, str) or not pin.isdigit() or not (PIN_MIN <= len(pin) <= PIN_MAX) or not pin.isascii():
        raise UserFileError(f"a PIN is {PIN_MIN} to {PIN_MAX} digits")
    return pin


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def hash_pin(pin: str, *, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> dict:
    """The stored form of a PIN: ``{"kdf": "scrypt", "n", "r", "p", "salt", "hash"}`` (base64)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    dk = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=32)
    return {"kdf": "scrypt", "n": n, "r": r, "p": p, "salt": _b64(salt), "hash": _b64(dk)}


def verify_pin(pin: str, stored: dict) -> bool:
    if stored.get("kdf") != "scrypt":
        raise UserFileError(f"unsupported PIN hash {stored.get('kdf')!r}: expected 'scrypt'")
    salt = base64.b64decode(stored["salt"])
    n, r, p = int(stored["n"]), int(stored["r"]), int(stored["p"])
    dk = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=32)
    return hmac.compare_digest(dk, base64.b64decode(stored["hash"]))


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    pin_hash: dict  # see hash_pin(); never the PIN itself

    def may(self, role: str) -> bool:
        """True when this user's role covers ``role`` (an engineer may do operator actions)."""
        return _RANK[self.role] >= _RANK[role]


class UserStore:
    """The users of one line, optionally backed by a JSON file (``save`` writes it 0600)."""

    def __init__(self, path: str | Path | None = None, *, scrypt_n: int = SCRYPT_N) -> None:
        self.path = Path(path) if path is not None else None
        self.scrypt_n = scrypt_n
        self._users: dict[str, User] = {}
        self._lock = threading.Lock()

    # -- files

    @classmethod
    def load(cls, path: str | Path) -> UserStore:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such users file")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserFileError(f"{p}: not a users file (expected JSON): {e}") from None
        store = cls(p)
        if not isinstance(data, dict) or not isinstance(data.get("users"), list):
            raise UserFileError(f'{p}: expected {{"users": [...]}}')
        for i, u in enumerate(data["users"]):
            where = f"{p}: users[{i}]"
            if not isinstance(u, dict):
                raise UserFileError(f"{where}: expected an object")
            name, role, h = u.get("name"), u.get("role"), u.get("pin")
            if not isinstance(name, str) or not name.strip():
                raise UserFileError(f"{where}.name={name!r}: expected a non-empty string")
            if role not in ROLES:
                raise UserFileError(f"{where}.role={role!r} is not allowed: choose one of {', '.join(ROLES)}")
            if not isinstance(h, dict) or not {"kdf", "n", "r", "p", "salt", "hash"} <= set(h):
                raise UserFileError(f"{where}.pin: expected a PIN hash with kdf, n, r, p, salt and hash")
            if name in store._users:
                raise UserFileError(f"{where}.name={name!r}: user listed twice")
            store._users[name] = User(name, role, dict(h))
        return store

    def save(self, path: str | Path | None = None) -> Path:
        p = Path(path) if path is not None else self.path
        if p is None:
            raise UserFileError("this user store has no file: pass a path to save()")
        with self._lock:
            data = {"users": [{"name": u.name, "role": u.role, "pin": u.pin_hash} for u in self._users.values()]}
        tmp = p.with_name(p.name + ".tmp")
        p.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a crash never leaves a half-written users file behind.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, p)
        self.path = p
        return p

    @classmethod
    def simulator_defaults(cls, *, scrypt_n: int = SCRYPT_N) -> UserStore:
        """In-memory store with the documented simulator users (operator 1111, engineer 2222)."""
        store = cls(scrypt_n=scrypt_n)
        for name, role, pin in SIMULATOR_USERS:
            store.add(name, role, pin)
        return store

    # -- users

    def add(self, name: str, role: str, pin: str) -> User:
        if not isinstance(name, str) or not name.strip() or len(name) > 40:
            raise UserFileError(f"user name {name!r}: expected 1 to 40 characters")
        if role not in ROLES:
            raise UserFileError(f"role={role!r} is not allowed: choose one of {', '.join(ROLES)}")
        check_pin(pin)
        if name in self._users:
            raise UserFileError(f"user {name!r} already exists")
        if self._match(pin) is not None:
            raise UserFileError("that PIN is already in use on this line: choose another")
        user = User(name, role, hash_pin(pin, n=self.scrypt_n))  # type: ignore[arg-type]
        with self._lock:
            self._users[name] = user
        return user

    def remove(self, name: str) -> None:
        with self._lock:
            if self._users.pop(name, None) is None:
                raise KeyError(f"no user {name!r}")

    def users(self) -> list[User]:
        with self._lock:
            return list(self._users.values())

    def _match(self, pin: str, name: str | None = None) -> User | None:
        with self._lock:
            candidates = (
                [self._users[name]]
                if name is not None and name in self._users
                else ([] if name is not None else list(self._users.values()))
            )
        for u in candidates:
            if verify_pin(pin, u.pin_hash):
                return u
        return None

    def verify(self, pin: str, name: str | None = None) -> User:
        """The user this PIN belongs to (optionally: must be ``name``); :class:`AuthError` if none."""
        try:
            check_pin(pin)
        except UserFileError:
            raise AuthError("wrong PIN") from None
        user = self._match(pin, name)
        if user is None:
            raise AuthError("wrong PIN")
        return user


@dataclass
class Session:
    token: str
    user: str
    role: Role
    created: float
    last_used: float

    def may(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


class SessionStore:
    """Login sessions and the wrong-PIN lockout, on an injectable monotonic clock."""

    def __init__(
        self,
        users: UserStore,
        *,
        idle_timeout_s: float = 30 * 60,
        max_failures: int = 5,
        lockout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = users
        self.idle_timeout_s = idle_timeout_s
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._failures = 0
        self._locked_until = 0.0
        self._lock = threading.Lock()

    def login(self, pin: str, name: str | None = None) -> Session:
        now = self.clock()
        with self._lock:
            if now < self._locked_until:
                wait = self._locked_until - now
                raise LockedOut(f"too many wrong PINs: try again in {int(wait + 0.999)} s", wait)
        try:
            user = self.users.verify(pin, name)
        except AuthError:
            with self._lock:
                self._failures += 1
                if self._failures >= self.max_failures:
                    self._failures = 0
                    self._locked_until = now + self.lockout_s
                    raise LockedOut(
                        f"too many wrong PINs: try again in {int(self.lockout_s)} s", self.lockout_s
                    ) from None
            raise
        s = Session(secrets.token_urlsafe(32), user.name, user.role, now, now)
        with self._lock:
            self._failures = 0
            self._sessions[s.token] = s
        return s

    def logout(self, token: str) -> bool:
        with self._lock:
            return self._sessions.pop(token, None) is not None

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token`` (and marks it used), or None."""
        if not token:
            return None
        now = self.clock()
        with self._lock:
            s = self._sessions.get(token)
            if s is None:
                return None
            if now - s.last_used > self.idle_timeout_s:
                del self._sessions[token]
                return None
            s.last_used = now
            return s

    def require(self, token: str | None, role: str) -> Session:
        """The session, if it may act as ``role``; else :class:`AuthError` / :class:`Forbidden`."""
        s = self.get(token)
        if s is None:
            raise AuthError(f"log in as {role} first")
        if not s.may(role):
            raise Forbidden(f"{s.user} is logged in as {s.role}: this needs an {role} login")
        return s
