"""The OPC UA server (scallop/app/opcua.py) driven by asyncua's own client over loopback: the
values a SCADA reads, the methods it calls, who may call them, alarm events, Basic256Sha256
with certificates, and ``scallop run`` serving it. Every client call is bounded in time."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import subprocess
import sys
import time

import pytest

asyncua = pytest.importorskip("asyncua")
from asyncua import Client  # noqa: E402
from asyncua.ua.uaerrors import BadUserAccessDenied, UaStatusCodeError  # noqa: E402

from scallop.app.config import build, load_config  # noqa: E402
from scallop.app.opcua import OpcUaSection, OpcUaServer  # noqa: E402
from scallop.errors import ConfigError  # noqa: E402
from tests.helpers import free_port, make_line  # noqa: E402

T = 10.0  # every client exchange, in seconds
NS = "urn:scallop:line"


def section(**kw) -> OpcUaSection:
    return OpcUaSection(
        **{"enabled": True, "endpoint": "opc.tcp://127.0.0.1:0", "security": ["None"], "update_s": 0.05, **kw}
    )


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, T))


async def line_node(c: Client):
    idx = await c.get_namespace_index(NS)
    return idx, await c.nodes.objects.get_child(f"{idx}:Line")


async def value(c: Client, path: str):
    idx, line = await line_node(c)
    node = await line.get_child([f"{idx}:{p}" for p in path.split("/")])
    return await node.read_value()


async def call(c: Client, method: str, *args):
    idx, line = await line_node(c)
    return await line.call_method(f"{idx}:{method}", *args)


def client(url: str, user: str | None = None, pin: str | None = None) -> Client:
    c = Client(url, timeout=T)
    if user is not None:
        c.set_user(user)
        c.set_password(pin)
    return c


async def wait_value(c: Client, path: str, want, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while (got := await value(c, path)) != want:
        assert time.monotonic() < deadline, f"{path} is {got!r}, not {want!r}"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- configuration


def test_config_is_off_by_default_and_checks_its_keys():
    assert load_config().opcua.enabled is False
    with pytest.raises(ConfigError, match=r"opcua: certificate and private_key: a Basic256Sha256 endpoint needs"):
        load_config(None, {"opcua": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"opcua: endpoint='opc.tcp://0.0.0.0': give the port"):
        load_config(None, {"opcua": {"endpoint": "opc.tcp://0.0.0.0"}})
    with pytest.raises(ConfigError, match=r"opcua: security\[0\]='Basic128Rsa15' is not allowed"):
        load_config(None, {"opcua": {"security": ["Basic128Rsa15"]}})
    with pytest.raises(ConfigError, match=r"opcua.update_s=0.0 is out of range|update_s=0.0 is out of range"):
        build(OpcUaSection, {"update_s": 0.0}, "opcua")


# ---------------------------------------------------------------------------- reading, calling, refusing


def test_values_match_the_line_and_names_are_plain_english(fake_line, fast_users):
    fake_line.set_counts(seen=120, picked=100, uro_removed=95, missed=5, adductor_hits=1, skipped=20, removal_rate=0.95)
    fake_line.arms[0].picks = 60

    async def main(url):
        async with client(url) as c:  # anonymous: reads
            idx, line = await line_node(c)
            names = {(await n.read_browse_name()).Name for n in await line.get_children()}
            assert {"State", "Recipe", "Picked", "UroRemoved", "Missed", "AdductorHits", "Seen", "Arms"} <= names
            assert {"Start", "Stop", "Pause", "SelectRecipe", "ActiveAlarms"} <= names
            snap = fake_line.snapshot()
            for path, want in (
                ("State", snap.state),
                ("Recipe", "M"),
                ("Recipes", ["S", "M", "L"]),
                ("Seen", 120),
                ("Picked", 100),
                ("UroRemoved", 95),
                ("Missed", 5),
                ("AdductorHits", 1),
                ("Skipped", 20),
                ("UroRemovalRatio", 0.95),
                ("Arms/left/Picks", 60),
                ("Arms/right/Connected", True),
                ("Arms/left/State", "idle"),
            ):
                assert await value(c, path) == want, path
            fake_line.set_counts(picked=101)
            await wait_value(c, "Picked", 101)  # follows the line

    with OpcUaServer(fake_line, fast_users, section()) as srv:
        run(main(srv.url))


def test_a_figure_the_line_cannot_know_reads_as_bad_not_zero(fake_line, fast_users):
    # Without a pick verifier (a real line with no inspection camera) what a pick did is unknown.
    fake_line.set_counts(seen=10, picked=8, uro_removed=None, missed=None, adductor_hits=None, removal_rate=None)

    async def main(url):
        from asyncua import ua

        async with client(url) as c:
            idx, line = await line_node(c)
            for path in ("UroRemoved", "Missed", "AdductorHits", "UroRemovalRatio"):
                node = await line.get_child([f"{idx}:{path}"])
                dv = await node.read_data_value(raise_on_bad_status=False)
                assert dv.StatusCode.value == ua.StatusCodes.BadNoDataAvailable, path
            assert await value(c, "Picked") == 8

    with OpcUaServer(fake_line, fast_users, section()) as srv:
        run(main(srv.url))


def test_start_and_stop_by_a_named_user_anonymous_and_wrong_pins_refused(fake_line, fast_users):
    async def main(url):
        async with client(url) as anon:
            with pytest.raises(BadUserAccessDenied):
                await call(anon, "Start")
            idx, line = await line_node(anon)
            state = await line.get_child(f"{idx}:State")
            with pytest.raises(UaStatusCodeError):
                await state.write_value("running")  # nobody writes the line's values
        with pytest.raises(Exception, match="BadUserAccessDenied|UserAccessDenied"):
            async with client(url, "operator", "9999"):
                pass
        async with client(url, "operator", "1111") as op:
            await call(op, "Start")
            await wait_value(op, "State", "running")
            with pytest.raises(UaStatusCodeError, match="BadInvalidState"):
                await call(op, "SelectRecipe", "L")  # not while running, as on the screen
            await call(op, "Stop")
            await wait_value(op, "State", "stopped")
            with pytest.raises(UaStatusCodeError, match="BadInvalidArgument"):
                await call(op, "SelectRecipe", "XL")
            await call(op, "SelectRecipe", "L")
            await wait_value(op, "Recipe", "L")

    with OpcUaServer(fake_line, fast_users, section()) as srv:
        run(main(srv.url))
    assert fake_line.calls == [("start", "operator"), ("stop", "operator"), ("recipe", "operator")]


def test_alarms_are_events_and_variables(fake_line, fast_users):
    class Handler:
        def __init__(self):
            self.events = []

        def event_notification(self, event):
            self.events.append(event.get_event_props_as_fields_dict())

    async def main(url):
        async with client(url) as c:
            idx, line = await line_node(c)
            etype = await c.nodes.base_event_type.get_child(f"{idx}:ScallopAlarmEventType")
            h = Handler()
            sub = await c.create_subscription(20, h)
            await sub.subscribe_events(line, etype)
            a = fake_line.raise_alarm("critical", "arm right not answering", source="arm:right")
            await wait_value(c, "CriticalAlarms", 1)
            assert await value(c, "ActiveAlarms") == ["critical: arm:right: arm right not answering"]
            deadline = time.monotonic() + 3
            while not h.events:
                assert time.monotonic() < deadline, "no alarm event"
                await asyncio.sleep(0.02)
            ev = h.events[0]
            assert ev["Message"].Value.Text == "arm right not answering" and ev["Severity"].Value == 900
            assert ev["AlarmId"].Value == a.id and ev["Active"].Value is True and ev["AlarmSource"].Value == "arm:right"
            await sub.delete()

    with OpcUaServer(fake_line, fast_users, section()) as srv:
        run(main(srv.url))


# ---------------------------------------------------------------------------- Basic256Sha256


def make_cert(path, name: str, uri: str):
    """A self-signed RSA 2048 certificate and key, DER and PEM, as `docs/opcua.md` makes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.KeyUsage(True, True, True, True, False, False, False, False, False), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    (path / f"{name}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (path / f"{name}.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path / f"{name}.der", path / f"{name}.pem"


def test_basic256sha256_with_a_password_or_a_client_certificate(fake_line, fast_users, tmp_path):
    cert, key = make_cert(tmp_path, "server", "urn:scallop:line")
    scada, scada_key = make_cert(tmp_path, "scada", "urn:plant:scada")
    stranger, stranger_key = make_cert(tmp_path, "stranger", "urn:plant:scada")
    cfg = build(
        OpcUaSection,
        {
            "enabled": True,
            "endpoint": "opc.tcp://127.0.0.1:0",
            "security": ["Basic256Sha256_SignAndEncrypt"],
            "certificate": str(cert),
            "private_key": str(key),
            "anonymous": False,
            "certificate_users": [{"certificate": str(scada), "user": "operator"}],
            "update_s": 0.05,
        },
    )

    async def secure(url, user=None, pin=None, identity=None) -> Client:
        c = client(url, user, pin)
        c.application_uri = "urn:plant:scada"
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{scada},{scada_key}")
        if identity is not None:  # log in as the certificate's user, no password
            await c.load_client_certificate(str(identity[0]))
            await c.load_private_key(identity[1])
        return c

    async def main(url):
        with pytest.raises(Exception):  # noqa: B017 -- no unencrypted session is offered
            async with client(url, "operator", "1111") as c:
                await call(c, "Start")
        with pytest.raises(Exception, match="BadIdentityTokenRejected"):
            async with await secure(url) as c:  # anonymous = false: encrypted, but nobody
                await value(c, "State")
        async with await secure(url, "operator", "1111") as c:
            await call(c, "Start")
        async with await secure(url, identity=(scada, scada_key)) as c:
            await call(c, "Stop")
        with pytest.raises(Exception, match="BadUserAccessDenied|UserAccessDenied"):
            async with await secure(url, identity=(stranger, stranger_key)) as c:
                await call(c, "Start")

    with OpcUaServer(fake_line, fast_users, cfg) as srv:
        run(main(srv.url))
    assert fake_line.calls == [("start", "operator"), ("stop", "operator")]


# ---------------------------------------------------------------------------- the real line


def test_a_start_over_opc_ua_is_recorded_like_one_from_the_screen(tmp_path, fast_users):
    line = make_line(tmp_path)
    try:

        async def main(url):
            async with client(url, "operator", "1111") as op:
                await call(op, "Start")
                await wait_value(op, "State", "running")
                assert await value(op, "Seen") == line.snapshot().seen
                assert await value(op, "Arms/arm1/Connected") is True
                await call(op, "Pause")
                await wait_value(op, "State", "paused")

        with OpcUaServer(line, fast_users, section(), audit=line.record.event) as srv:
            run(main(srv.url))
    finally:
        line.close()
    con = sqlite3.connect(tmp_path / "record.sqlite")
    try:
        events = con.execute("SELECT kind, user, detail FROM events ORDER BY id").fetchall()
    finally:
        con.close()
    kinds = [(k, u) for k, u, _ in events]
    assert ("start", "operator") in kinds and ("pause", "operator") in kinds
    start = [d for k, u, d in events if k == "start"]
    assert start and '"how": "opcua"' in start[0]  # where it came from, not "screen"
    login = [d for k, u, d in events if k == "login" and u == "operator"]
    assert login and '"via": "opcua"' in login[0]


def test_scallop_run_serves_opc_ua_when_enabled(tmp_path):
    port = free_port()
    (tmp_path / "line.toml").write_text(
        f'[opcua]\nenabled = true\nendpoint = "opc.tcp://127.0.0.1:{port}"\nsecurity = ["None"]\n'
    )
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scallop",
            "run",
            "--config",
            "line.toml",
            "--no-browser",
            "--duration",
            "4",
            "--port",
            "0",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        for line in p.stderr:
            if line.startswith("OPC UA: "):
                assert line.strip() == f"OPC UA: opc.tcp://127.0.0.1:{port}"
                break
            assert time.monotonic() < deadline, "scallop run did not announce its OPC UA server"

        async def main():
            async with client(f"opc.tcp://127.0.0.1:{port}") as c:
                await wait_value(c, "State", "running")
                return await value(c, "Seen")

        run(main())
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
