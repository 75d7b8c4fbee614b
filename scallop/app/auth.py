"""Who may do what on the operator screen: users, PINs, roles and login sessions.

Two roles: ``operator`` runs the line (start, pause, stop, reset, acknowledge alarms, choose a
recipe); ``engineer`` may do all of that and also change configuration and calibration.

Users live in a JSON file (``users.json``) that stores, per user, a name, a role and a salted
scrypt hash of the PIN — never the PIN. Manage it with :class:`UserStore`::

    store = UserStore.load("users.json")            # or UserStore(path) for a new file
    store.add("maria", "operator", "4711")
    store.save()

PINs are 4 to 8 digits (an engineer's at least 6), and unique on one line: the screen logs in
with the PIN alone (a PIN pad is what works with wet gloves), so the PIN identifies the user.
``scallop users add|passwd|remove|list`` manages the file (docs/operator-screen.md); the one
store serves every way into the line, so a user and a role mean the same everywhere. A running
screen rereads the file when it changes.

Simulator defaults (:meth:`UserStore.simulator_defaults`, used when the line runs on the
simulator without a users file). With any real device configured they are never accepted
(:func:`screen_users`), nor are their PINs in a users file:

=========  ========  =====
user       role      PIN
=========  ========  =====
operator   operator  1111
engineer   engineer  2222
=========  ========  =====

A login gives a :class:`Session` with a random token, carried as the ``scallop_session`` cookie
(the page) or as ``Authorization: Bearer <token>`` (scripts). Sessions expire after a period
without use. Wrong PINs are counted per client address and per user name, a try counted before
its PIN is checked, so parallel guesses get no more tries than serial ones; each lock-out lasts
twice the one before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scallop.errors import ConfigError, DataError, ScallopError, naming_file

Role = Literal["operator", "engineer"]
ROLES: tuple[str, ...] = ("operator", "engineer")
# Higher rank may do everything a lower rank may.
_RANK = {"operator": 1, "engineer": 2}

PIN_MIN, PIN_MAX = 4, 8
ENGINEER_PIN_MIN = 6  # an engineer changes the line's configuration: a longer PIN
# scrypt cost: ~50 ms per check on one core, enough to make guessing a 4-digit PIN from a
# stolen users file slow-ish while keeping a login snappy. Stored per user so it can change.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1

SIMULATOR_USERS = (("operator", "operator", "1111"), ("engineer", "engineer", "2222"))


class AuthError(ScallopError):
    """Not logged in, a wrong PIN or an expired session (HTTP 401). ``code`` and ``params`` name
    the message in the screen's catalogue (``error.<code>``)."""

    http_status = 401

    def __init__(self, msg: str, code: str = "", **params: object) -> None:
        super().__init__(msg)
        self.code = code
        self.params = params


class Forbidden(AuthError):
    """Logged in, but the role may not do this (HTTP 403)."""

    http_status = 403


class LockedOut(AuthError):
    """Too many wrong PINs, or too many at once; ``retry_after_s`` says when to try again (HTTP 429)."""

    http_status = 429

    def __init__(self, msg: str, retry_after_s: float, code: str = "locked") -> None:
        seconds = max(1, int(retry_after_s + 0.999))
        super().__init__(msg, code, seconds=seconds)
        self.retry_after_s = retry_after_s


class UserFileError(DataError):
    """A users file that cannot be read or written; the message names it."""


class UserError(ConfigError):
    """A user, role or PIN that cannot be used (as typed by whoever manages the users)."""


def check_pin(pin: object, role: str | None = None) -> str:
    """``pin`` if it is a PIN this role may have (any role: the shortest any may have)."""
    lo = ENGINEER_PIN_MIN if role == "engineer" else PIN_MIN
    if not isinstance(pin, str) or not pin.isdigit() or not (lo <= len(pin) <= PIN_MAX) or not pin.isascii():
        whose = "an engineer's PIN" if role == "engineer" else "a PIN"
        raise UserError(f"{whose} is {lo} to {PIN_MAX} digits")
    return pin


def is_loopback(host: str) -> bool:
    """An address (or ``localhost``) that only this computer can reach."""
    h = host.strip().strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


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
    """The users of one line, optionally backed by a JSON file (``save`` writes it 0600, atomically)."""

    def __init__(self, path: str | Path | None = None, *, scrypt_n: int = SCRYPT_N) -> None:
        self.path = Path(path) if path is not None else None
        self.scrypt_n = scrypt_n
        self._users: dict[str, User] = {}
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None  # the file's (mtime_ns, size) when read or written

    # -- files

    @classmethod
    def load(cls, path: str | Path) -> UserStore:
        store = cls(path)
        store._users = _read_users(Path(path))
        store._stamp = _stamp(store.path)
        return store

    def save(self, path: str | Path | None = None) -> Path:
        p = Path(path) if path is not None else self.path
        if p is None:
            raise UserFileError("this user store has no file: pass a path to save()")
        with self._lock:
            data = {"users": [{"name": u.name, "role": u.role, "pin": u.pin_hash} for u in self._users.values()]}
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        # Write, sync, rename: a crash or a full disk never leaves a half-written users file, and
        # the PIN hashes are never readable by others, not even for a moment.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with naming_file(p), os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            dfd = os.open(p.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass  # some filesystems cannot sync a directory; the rename is still atomic
        self.path = p
        self._stamp = _stamp(p)
        return p

    def refresh(self) -> bool:
        """Reread the file if it changed since it was read (``scallop users`` on a running line).
        A file that cannot be read now keeps the users read before, and says so on stderr."""
        if self.path is None or self._stamp is None:
            return False
        now = _stamp(self.path)
        if now is None or now == self._stamp:
            return False
        try:
            users = _read_users(self.path)
        except (UserFileError, OSError) as e:
            print(f"users file not reread, the previous users stay: {e}", file=sys.stderr)
            self._stamp = now
            return False
        with self._lock:
            self._users = users
            self._stamp = now
        return True

    @classmethod
    def simulator_defaults(cls, *, scrypt_n: int = SCRYPT_N) -> UserStore:
        """In-memory store with the documented simulator users (operator 1111, engineer 2222)."""
        store = cls(scrypt_n=scrypt_n)
        # Not through add(): their PINs are public, so add() refuses them for anyone else.
        for name, role, pin in SIMULATOR_USERS:
            store._users[name] = User(name, role, hash_pin(pin, n=scrypt_n))  # type: ignore[arg-type]
        return store

    def refuse_simulator_pins(self) -> None:
        """:class:`~scallop.errors.ConfigError` if a user has one of the simulator's documented PINs."""
        for name, _, pin in SIMULATOR_USERS:
            user = self._match(pin)
            if user is not None:
                raise ConfigError(
                    f"{self.path}: user {user.name!r} has the simulator's published PIN (that of {name!r}): "
                    f"give them another with 'scallop users passwd {user.name} --file {self.path}'"
                )

    # -- users

    def add(self, name: str, role: str, pin: str) -> User:
        if not isinstance(name, str) or not name.strip() or len(name) > 40 or not name.isprintable():
            raise UserError(f"user name {name!r}: expected 1 to 40 printable characters")
        if role not in ROLES:
            raise UserError(f"role={role!r} is not allowed: choose one of {', '.join(ROLES)}")
        if name in self._users:
            raise UserError(f"user {name!r} already exists")
        user = User(name, role, self._new_hash(pin, role))  # type: ignore[arg-type]
        with self._lock:
            self._users[name] = user
        return user

    def passwd(self, name: str, pin: str) -> User:
        """Give ``name`` a new PIN."""
        old = self.get(name)
        user = User(name, old.role, self._new_hash(pin, old.role, but=name))
        with self._lock:
            self._users[name] = user
        return user

    def get(self, name: str) -> User:
        with self._lock:
            if name not in self._users:
                raise KeyError(f"no user {name!r}")
            return self._users[name]

    def _new_hash(self, pin: str, role: str, but: str | None = None) -> dict:
        check_pin(pin, role)
        if pin in {p for _, _, p in SIMULATOR_USERS}:
            raise UserError("that PIN is the simulator's, published in the manual: choose another")
        match = self._match(pin)
        if match is not None and match.name != but:
            raise UserError("that PIN is already in use on this line: choose another")
        return hash_pin(pin, n=self.scrypt_n)

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
        self.refresh()
        try:
            check_pin(pin)
        except UserError:
            raise AuthError("wrong PIN", "wrong_pin") from None
        user = self._match(pin, name)
        if user is None:
            raise AuthError("wrong PIN", "wrong_pin")
        return user


def _stamp(path: Path | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None
    return st.st_mtime_ns, st.st_size


def _read_users(p: Path) -> dict[str, User]:
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such users file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserFileError(f"{p}: not a users file (expected JSON): {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("users"), list):
        raise UserFileError(f'{p}: expected {{"users": [...]}}')
    users: dict[str, User] = {}
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
        if name in users:
            raise UserFileError(f"{where}.name={name!r}: user listed twice")
        users[name] = User(name, role, dict(h))
    return users


def screen_users(users_file: str, real_devices: list[str], host: str) -> UserStore:
    """Who may log in on a line's screen. A users file if one is configured; else the simulator's
    users, but only on the simulator: with a real device (``LineConfig.real_devices()``) nobody
    can log in on a screen that only this computer reaches, and a screen reachable from the
    network refuses to start (:class:`~scallop.errors.ConfigError`, saying why)."""
    if users_file:
        store = UserStore.load(users_file)
        if real_devices:
            store.refuse_simulator_pins()
        return store
    if not real_devices:
        return UserStore.simulator_defaults()
    if not is_loopback(host):
        raise ConfigError(
            f"the screen would listen on {host} for a line with real devices ({', '.join(real_devices)}) "
            "but [ui] users_file is not set, so only the simulator's published PINs would exist: create a users "
            "file ('scallop users add NAME --role operator --file users.json') and set [ui] users_file, "
            "or listen on 127.0.0.1"
        )
    return UserStore()


@dataclass
class Session:
    token: str
    user: str
    role: Role
    created: float
    last_used: float

    def may(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


@dataclass
class _Tries:
    """Wrong PINs from one client address or for one user name."""

    failures: int = 0  # since the last success or lock-out
    in_flight: int = 0  # tries being checked right now: counted before their answer
    lockouts: int = 0  # in a row: each lasts twice the one before
    locked_until: float = 0.0
    last: float = 0.0


class SessionStore:
    """Login sessions and the wrong-PIN lock-outs, on an injectable monotonic clock.

    A client address, and a user name when one is given, may have ``max_failures`` wrong PINs;
    the next lock-out of that address or name lasts ``lockout_s``, then twice as long each time
    (up to ``max_lockout_s``) until a right PIN. A try counts from the moment it arrives, so
    guesses sent in parallel are refused once ``max_failures`` are being checked."""

    def __init__(
        self,
        users: UserStore,
        *,
        idle_timeout_s: float = 30 * 60,
        max_failures: int = 5,
        lockout_s: float = 30.0,
        max_lockout_s: float = 15 * 60,
        forget_s: float = 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = users
        self.idle_timeout_s = idle_timeout_s
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.max_lockout_s = max_lockout_s
        self.forget_s = forget_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._tries: dict[str, _Tries] = {}
        self._lock = threading.Lock()

    def _keys(self, client: str, name: str | None) -> list[str]:
        keys = [f"address {client or '?'}"]
        if name is not None and any(u.name == name for u in self.users.users()):
            keys.append(f"user {name}")  # unknown names get no entry: nothing to lock, no memory to fill
        return keys

    def _forget_old(self, now: float) -> None:
        old = [k for k, t in self._tries.items() if not t.in_flight and now - t.last > self.forget_s]
        for k in old:
            del self._tries[k]

    def login(self, pin: str, name: str | None = None, client: str = "") -> Session:
        """A session for the user whose PIN this is; :class:`AuthError` for a wrong PIN,
        :class:`LockedOut` while ``client`` or ``name`` is locked out."""
        now = self.clock()
        keys = self._keys(client, name)
        with self._lock:
            self._forget_old(now)
            tries = [self._tries.setdefault(k, _Tries()) for k in keys]
            wait = max(t.locked_until - now for t in tries)
            if wait > 0:
                raise LockedOut(f"too many wrong PINs: try again in {int(wait + 0.999)} s", wait)
            if any(t.failures + t.in_flight >= self.max_failures for t in tries):
                raise LockedOut("too many PIN tries at once: try again in 1 s", 1.0, code="busy")
            for t in tries:
                t.in_flight += 1
                t.last = now
        ok = False
        try:
            user = self.users.verify(pin, name)
            ok = True
        finally:
            with self._lock:
                lock_s = 0.0
                for t in tries:
                    t.in_flight -= 1
                    if ok:
                        t.failures = t.lockouts = 0
                        continue
                    t.failures += 1
                    if t.failures >= self.max_failures:
                        t.failures = 0
                        t.lockouts += 1
                        t.locked_until = now + min(self.max_lockout_s, self.lockout_s * 2 ** (t.lockouts - 1))
                        lock_s = max(lock_s, t.locked_until - now)
            if not ok and lock_s > 0:
                raise LockedOut(f"too many wrong PINs: try again in {int(lock_s + 0.999)} s", lock_s) from None
        s = Session(secrets.token_urlsafe(32), user.name, user.role, now, now)
        with self._lock:
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
            raise AuthError(f"log in as {role} first", "login_needed", role=f"#role.{role}")
        if not s.may(role):
            raise Forbidden(
                f"{s.user} is logged in as {s.role}: this needs an {role} login",
                "role_needed",
                user=s.user,
                role=f"#role.{s.role}",
                needed=f"#role.{role}",
            )
        return s
