"""The line on OPC UA, for the plant's SCADA and MES (asyncua; docs/opcua.md).

An OPC UA server in a thread of its own, with its own event loop, started by ``scallop run``
when ``[opcua] enabled = true``. It reads the line through :class:`~scallop.app.line_api.LineAPI`
only, like the operator screen, and refreshes its variables from a snapshot every ``update_s``:

``Objects/Line``: ``State``, ``Recipe``, ``Recipes``, ``UptimeSeconds``, the counts (``Seen``,
``Picked``, ``UroRemoved``, ``Missed``, ``AdductorHits``, ``Skipped``, ``Frames``,
``FramesDropped``), ``ScallopsPerMinute``, ``UroRemovalRatio``, ``ActiveAlarms`` and
``CriticalAlarms``; ``Line/Arms/<arm>``: ``State``, ``Connected``, ``Picks``, ``UroRemoved``,
``Utilisation``; the methods ``Start``, ``Stop``, ``Pause`` and ``SelectRecipe(name)``. Every
change of an alarm (raised, cleared, acknowledged) is an event of ``ScallopAlarmEventType``
emitted by ``Line``.

Who may do what is the operator screen's users file (:class:`~scallop.app.auth.UserStore`): a
user logs in with their name and PIN (or a client certificate mapped to a user name), and may
call the methods their role allows (every method is an operator's). A call is made in that
user's name, so the record shows who started the line, as from the screen. Anonymous sessions
(``anonymous = true``) read and subscribe, never write or call. Wrong PINs count towards the
same lock-out as on the screen.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from scallop.app.auth import AuthError, SessionStore, UserStore
from scallop.app.line_api import Alarm, LineAPI, LineSnapshot
from scallop.errors import ConfigError, ScallopError, StateError, check_range

log = logging.getLogger("scallop.opcua")

POLICIES = ("None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt")
NAMESPACE = "urn:scallop:line"
SEVERITY = {"info": 100, "warning": 500, "critical": 900}  # OPC UA event severity, 1..1000


def application_uri() -> str:
    """This line PC's OPC UA application URI; its certificate names it (docs/opcua.md)."""
    return f"{NAMESPACE}:{socket.gethostname()}"


class OpcUaError(ScallopError):
    """The OPC UA server could not start or stop (the message says why)."""

    exit_code = 4


@dataclass
class CertificateUser:
    """``[[opcua.certificate_users]]``: a client certificate that logs in as ``user`` (a user of
    the users file, whose role applies)."""

    certificate: str
    user: str

    def __post_init__(self) -> None:
        if not self.certificate or not self.user:
            raise ValueError("certificate_users: each needs a certificate file and a user name")


@dataclass
class OpcUaSection:
    """[opcua]: the OPC UA server (docs/opcua.md). Off unless ``enabled``. ``security``: the
    endpoints offered; a Basic256Sha256 one needs the server's ``certificate`` and
    ``private_key``. ``anonymous``: sessions without a user may read (never call).
    ``update_s``: how often the variables follow the line."""

    enabled: bool = False
    endpoint: str = "opc.tcp://0.0.0.0:4840"
    security: list[str] = field(default_factory=lambda: ["Basic256Sha256_SignAndEncrypt"])
    certificate: str = ""
    private_key: str = ""
    anonymous: bool = True
    certificate_users: list[CertificateUser] = field(default_factory=list)
    update_s: float = 0.5

    def __post_init__(self) -> None:
        url = urlparse(self.endpoint)
        if url.scheme != "opc.tcp" or not url.hostname:
            raise ValueError(f"endpoint={self.endpoint!r}: expected opc.tcp://HOST:PORT")
        try:
            port = url.port
        except ValueError:
            port = None
        if port is None:
            raise ValueError(f"endpoint={self.endpoint!r}: give the port (4840 is OPC UA's)")
        if not self.security:
            raise ValueError(f"security is empty: choose from {', '.join(POLICIES)}")
        for i, p in enumerate(self.security):
            if p not in POLICIES:
                raise ValueError(f"security[{i}]={p!r} is not allowed: choose from {', '.join(POLICIES)}")
        secure = any(p != "None" for p in self.security)
        if self.enabled and secure and not (self.certificate and self.private_key):
            raise ValueError(
                "certificate and private_key: a Basic256Sha256 endpoint needs the server's certificate and key "
                '(docs/opcua.md says how to make them), or security = ["None"] on a closed network'
            )
        if self.certificate_users and not secure:
            raise ValueError("certificate_users: a certificate login needs a Basic256Sha256 endpoint in security")
        check_range("update_s", self.update_s, 0.05, 10.0)


# The user of the request being served: set by the permission check, which asyncua runs in the
# connection's task just before the request, read by the method it calls (asyncua passes a
# method no session).
_caller: contextvars.ContextVar[Any] = contextvars.ContextVar("opcua_caller", default=None)


class OpcUaServer:
    """The server for one line; ``start()`` returns once it listens, ``stop()`` joins it.

    ``audit(kind, user, detail)`` hears logins and refused ones (the record's events)."""

    def __init__(
        self,
        line: LineAPI,
        users: UserStore,
        config: OpcUaSection,
        audit: Callable[[str, str, dict], None] | None = None,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.line = line
        self.users = users
        self.config = config
        self.audit = audit
        self.start_timeout_s = start_timeout_s
        self.sessions = SessionStore(users)  # the screen's lock-out rules for wrong PINs
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        u = urlparse(self.config.endpoint)
        host = u.hostname or ""
        return f"opc.tcp://{f'[{host}]' if ':' in host else host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> OpcUaServer:
        self._thread = threading.Thread(target=self._run, name="opcua-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            self.stop()
            raise OpcUaError(
                f"the OPC UA server on {self.config.endpoint} did not start within {self.start_timeout_s} s"
            )
        if self._error is not None:
            self._thread.join(5.0)
            e = self._error
            raise e if isinstance(e, ScallopError) else OpcUaError(f"OPC UA server on {self.config.endpoint}: {e}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:
                pass  # the loop has already ended
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise OpcUaError(f"the OPC UA server did not stop within {timeout} s")
            self._thread = None

    def __enter__(self) -> OpcUaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by start(), or logged once running
            if not self._ready.is_set():
                self._error = e
            else:
                log.error("OPC UA server stopped: %s", e)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await self._build()
        try:
            await server.start()
        except OSError as e:
            raise OpcUaError(f"cannot serve OPC UA on {self.config.endpoint}: {e.strerror or e}") from None
        try:
            self.port = server.bserver.port
            space = self._space
            self._ready.set()
            log.info("OPC UA server at %s", self.url)
            while not self._stopping.is_set():
                try:
                    snap = await self._loop.run_in_executor(None, self.line.snapshot)
                    await space.update(snap)
                except Exception as e:  # the line answering badly must not end the server
                    log.warning("OPC UA: the line's values could not be read: %s", e)
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.config.update_s)
                except TimeoutError:
                    pass
        finally:
            await server.stop()
            await self._loop.shutdown_default_executor()

    async def _build(self):
        from asyncua import Server, ua

        cfg = self.config
        server = Server()
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name("Scallop uro-removal line")
        # Unique per line PC, as OPC UA asks of an application URI (the namespace is every line's).
        await server.set_application_uri(application_uri())
        tokens: list[type] = [ua.UserNameIdentityToken]
        if cfg.anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if cfg.certificate_users:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
        if cfg.certificate:
            for what, path in (("certificate", cfg.certificate), ("private_key", cfg.private_key)):
                if not Path(path).is_file():
                    raise ConfigError(f"opcua.{what}={path!r}: no such file")
            try:
                await server.load_certificate(cfg.certificate)
                await server.load_private_key(cfg.private_key)
            except Exception as e:
                raise ConfigError(f"opcua.certificate / private_key: cannot be used: {e}") from None
        server.set_security_policy(
            [getattr(ua.SecurityPolicyType, "NoSecurity" if p == "None" else p) for p in cfg.security],
            permission_ruleset=_Permissions(),
        )
        server.iserver.set_user_manager(_Users(self, await self._certificate_users()))
        self._space = _AddressSpace(server, self)
        await self._space.build(await self._loop.run_in_executor(None, self.line.snapshot))
        return server

    async def _certificate_users(self) -> dict[bytes, str]:
        from asyncua.crypto import uacrypto

        out = {}
        for i, cu in enumerate(self.config.certificate_users):
            try:
                cert = await uacrypto.load_certificate(cu.certificate)
            except Exception as e:
                raise ConfigError(f"opcua.certificate_users[{i}].certificate={cu.certificate!r}: {e}") from None
            try:
                self.users.get(cu.user)
            except KeyError:
                raise ConfigError(
                    f"opcua.certificate_users[{i}].user={cu.user!r}: no such user in the users file"
                ) from None
            out[uacrypto.der_from_x509(cert)] = cu.user
        return out

    def _audit(self, kind: str, user: str, detail: dict) -> None:
        if self.audit is not None:
            try:
                self.audit(kind, user, {"via": "opcua", **detail})
            except Exception:
                pass  # the audit trail failing must not lock out the plant's systems

    # ------------------------------------------------------------------ methods
    async def call(self, action: str, *args: Any):
        """Run ``line.<action>(*args, user)`` for the calling user, if their role allows it."""
        from asyncua import ua

        user = _caller.get()
        name = getattr(user, "name", None)
        try:
            if not name or not self.users.get(name).may("operator"):
                raise KeyError(name)
        except KeyError:
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        try:
            fn = getattr(self.line, action)
            if action == "start":
                # The record says where a start came from: here, the plant's SCADA/MES.
                fn = functools.partial(fn, how="opcua")
            await self._loop.run_in_executor(None, fn, *args, name)
        except KeyError:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        except (StateError, RuntimeError) as e:
            log.info("OPC UA %s by %s refused: %s", action, name, e)
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        return []


class _Permissions:
    """asyncua's role rules, less writing and calling for anonymous sessions; notes the user
    of each request for the method it may call."""

    def __init__(self) -> None:
        from asyncua import ua
        from asyncua.crypto.permission_rules import USER_TYPES, UserRole

        user = {ua.NodeId(t) for t in USER_TYPES}
        refused = {ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)}
        refused.add(ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary))
        refused.add(ua.NodeId(ua.ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary))
        self._allowed = {UserRole.User: user, UserRole.Anonymous: user - refused, UserRole.Admin: user}

    def check_validity(self, user, action_type_id, body) -> bool:
        _caller.set(user)
        return action_type_id in self._allowed.get(user.role, set())


class _Users:
    """asyncua's user manager over the line's users file: a name and PIN, or a mapped client
    certificate; anonymous as configured."""

    def __init__(self, server: OpcUaServer, certificates: dict[bytes, str]) -> None:
        self.server = server
        self.certificates = certificates

    def get_user(self, iserver, username=None, password=None, certificate=None):
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None:
            # asyncua passes the certificate of the secure channel, or of an X509 identity token
            # (checked against its signature): one mapped to a user logs in as that user.
            name = self.certificates.get(certificate) if certificate else None
            if name is not None:
                self.server._audit("login", name, {"certificate": True})
                return User(role=UserRole.User, name=name)
            if self.server.config.anonymous:
                return User(role=UserRole.Anonymous)
            self.server._audit("login_refused", "", {"reason": "anonymous sessions are off"})
            return None
        try:
            s = self.server.sessions.login(password or "", username, client="opcua")
        except AuthError as e:
            self.server._audit("login_refused", username, {"reason": str(e)})
            return None
        self.server.sessions.logout(s.token)  # OPC UA keeps its own session: only the check is wanted
        self.server._audit("login", s.user, {"role": s.role})
        return User(role=UserRole.User, name=s.user)


class _AddressSpace:
    """The nodes under ``Objects/Line`` and the values they take from a snapshot."""

    COUNTS = (
        ("Seen", "seen"),
        ("Picked", "picked"),
        ("UroRemoved", "uro_removed"),
        ("Missed", "missed"),
        ("AdductorHits", "adductor_hits"),
        ("Skipped", "skipped"),
        ("Frames", "frames"),
        ("FramesDropped", "frames_dropped"),
    )
    ARM_VALUES = (
        ("State", "state", "String"),
        ("Connected", "connected", "Boolean"),
        ("Picks", "picks", "UInt64"),
        ("UroRemoved", "uro_removed", "UInt64"),
        ("Utilisation", "utilisation", "Double"),
    )

    def __init__(self, server, owner: OpcUaServer) -> None:
        self.server = server
        self.owner = owner
        self.vars: dict[str, tuple[Any, Any]] = {}  # key -> (node, VariantType)
        self.arms: set[str] = set()
        self.alarms: dict[int, tuple[bool, bool]] = {}  # id -> (active, acked) as last sent

    async def build(self, snap: LineSnapshot) -> None:
        from asyncua import ua

        s = self.server
        self.idx = await s.register_namespace(NAMESPACE)
        line = await s.nodes.objects.add_object(self.idx, "Line")
        self.line_node = line
        V = ua.VariantType
        for key, value, vt in (
            ("State", "", V.String),
            ("Recipe", "", V.String),
            ("Recipes", [], V.String),
            ("UptimeSeconds", 0.0, V.Double),
            ("ScallopsPerMinute", 0.0, V.Double),
            ("UroRemovalRatio", 0.0, V.Double),
            ("ActiveAlarms", [], V.String),
            ("CriticalAlarms", 0, V.UInt32),
            *((name, 0, V.UInt64) for name, _ in self.COUNTS),
        ):
            node = await line.add_variable(self.idx, key, ua.Variant(value, vt))
            self.vars[key] = (node, vt)
        self.arms_node = await line.add_object(self.idx, "Arms")
        for name in ("Start", "Stop", "Pause"):
            await line.add_method(self.idx, name, self._method(name.lower()), [], [])
        arg = ua.Argument()
        arg.Name, arg.DataType, arg.ValueRank = "Recipe", ua.NodeId(ua.ObjectIds.String), -1
        arg.Description = ua.LocalizedText("the recipe's name (Line/Recipes)")
        await line.add_method(self.idx, "SelectRecipe", self._method("select_recipe"), [arg], [])
        etype = await s.create_custom_event_type(
            self.idx,
            "ScallopAlarmEventType",
            ua.ObjectIds.BaseEventType,
            [
                ("AlarmId", ua.VariantType.UInt32),
                ("AlarmSource", ua.VariantType.String),
                ("Active", ua.VariantType.Boolean),
                ("Acknowledged", ua.VariantType.Boolean),
                ("AcknowledgedBy", ua.VariantType.String),
            ],
        )
        # Events come from Line: a client subscribes to it (or to Server, which sees everything).
        await line.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        await s.nodes.server.add_reference(line.nodeid, ua.ObjectIds.HasNotifier)
        self.events = await s.get_event_generator(etype, line)
        self.recipes = [r.name for r in await asyncio.get_running_loop().run_in_executor(None, self.owner.line.recipes)]
        await self.update(snap)

    def _method(self, action: str):
        owner = self.owner

        async def method(parent, *args):
            return await owner.call(action, *(a.Value for a in args))

        method.__name__ = action
        return method

    async def _write(self, key: str, value: Any) -> None:
        from asyncua import ua

        node, vt = self.vars[key]
        if value is None:
            # A figure the line cannot know (what a pick did, without a pick verifier) is never
            # reported as 0: the client reads a Bad status on it, as from a sensor with no data.
            await node.write_value(
                ua.DataValue(
                    ua.Variant(None, ua.VariantType.Null), StatusCode=ua.StatusCode(ua.StatusCodes.BadNoDataAvailable)
                )
            )
            return
        await node.write_value(ua.Variant(value, vt))

    async def update(self, snap: LineSnapshot) -> None:
        await self._write("State", snap.state)
        await self._write("Recipe", snap.recipe)
        await self._write("Recipes", self.recipes)
        await self._write("UptimeSeconds", float(snap.uptime_s))
        await self._write("ScallopsPerMinute", float(snap.per_minute))
        await self._write("UroRemovalRatio", None if snap.removal_rate is None else float(snap.removal_rate))
        for name, attr in self.COUNTS:
            count = getattr(snap, attr)
            await self._write(name, None if count is None else int(count))
        active = [a for a in snap.alarms if a.active]
        await self._write("ActiveAlarms", [f"{a.severity}: {a.source}: {a.text}" for a in active])
        await self._write("CriticalAlarms", sum(a.severity == "critical" for a in active))
        for arm in snap.arms:
            if arm.name not in self.arms:
                await self._add_arm(arm.name)
            for key, attr, _ in self.ARM_VALUES:
                value = getattr(arm, attr)
                await self._write(
                    f"Arms/{arm.name}/{key}",
                    int(value) if isinstance(value, int) and not isinstance(value, bool) else value,
                )
        for a in snap.alarms:
            state = (a.active, a.acked)
            if self.alarms.get(a.id) != state:
                self.alarms[a.id] = state
                await self._event(a)

    async def _add_arm(self, name: str) -> None:
        from asyncua import ua

        node = await self.arms_node.add_object(self.idx, name)
        for key, _, vt in self.ARM_VALUES:
            t = getattr(ua.VariantType, vt)
            v = await node.add_variable(
                self.idx, key, ua.Variant({"String": "", "Boolean": False, "Double": 0.0}.get(vt, 0), t)
            )
            self.vars[f"Arms/{name}/{key}"] = (v, t)
        self.arms.add(name)

    async def _event(self, a: Alarm) -> None:
        from asyncua import ua

        ev = self.events.event
        ev.Message = ua.LocalizedText(a.text, "en")
        ev.Severity = SEVERITY.get(a.severity, 500)
        ev.AlarmId = a.id
        ev.AlarmSource = a.source
        ev.Active = a.active
        ev.Acknowledged = a.acked
        ev.AcknowledgedBy = a.acked_by
        await self.events.trigger()
