"""The line's PLC client against a PLC written from docs/plc-interface.md alone
(:mod:`tests.doc_plc`, served on a bare socket by :class:`tests.doc_robot.RawModbusServer`),
through every fault the document allows: exception answers, lost, late and dropped answers on
the commit and the status read, the server away and mute, a stopped PLC program, the safety
relay, a jammed gate, late requests, the watchdog. And the document against the profile.

What must hold every time: every divert the line asked for is taken by the PLC exactly once and
fires at its count, and a PLC that cannot be trusted is an error, never a status."""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path

import pytest

from scallop.robot.config import TransportConfig
from scallop.robot.plc import (
    GateFault,
    GateMode,
    GateState,
    Infeed,
    PlcClient,
    PlcCommError,
    PlcConfig,
    PlcProtocolError,
    PlcStalledError,
    StackLight,
    load_plc_profile,
)
from scallop.sim.clock import VirtualClock
from tests.doc_plc import DIV_SEQ, DocPlc
from tests.doc_robot import RawModbusServer

CPS = 1000  # raw counts a second
EXCEPTION_CODES = (1, 2, 3, 4, 5, 6, 10, 11)


def plc_config(port: int, timeout_s: float) -> PlcConfig:
    """The gate 900 mm down the belt; each answer awaited ``timeout_s``."""
    return PlcConfig(
        transport=TransportConfig(host="127.0.0.1", port=port, timeout_s=timeout_s, reconnect_min_s=0.0),
        gate_x_mm=900.0,
        gate_lead_mm=40.0,
        gate_open_ms=120,
        heartbeat_timeout_s=0.5,
        watchdog_ms=400,
    )


@pytest.fixture
def rig():
    clock = VirtualClock(start=50.0, auto_advance=False)
    plc = DocPlc(clock, lambda t: int(round(t * CPS)))
    server = RawModbusServer(plc, late_s=0.3)
    client = PlcClient(plc_config(server.port, timeout_s=0.15), clock)
    try:
        client.connect()
        client.set_outputs(Infeed.RUN, StackLight.GREEN, False, GateMode.AUTO)
        yield clock, plc, server, client
    finally:
        client.close()
        server.close()


def cycle(clock, client, seconds: float, every: float = 0.05, errors: list | None = None):
    """The line's loop: beat and poll every ``every`` s; comm errors collected, not raised."""
    st = None
    for _ in range(round(seconds / every)):
        clock.advance(every)
        try:
            client.beat()
            st = client.poll()
        except PlcCommError as e:
            if errors is None:
                raise
            errors.append(str(e))
    return st


def test_the_plc_side_is_written_from_the_document_alone():
    tree = ast.parse(Path(__file__).with_name("doc_plc.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.startswith(("scallop", "pymodbus"))}, imported


def test_document_matches_the_profile():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "plc-interface.md").read_text()
    m = load_plc_profile("generic")
    rows = re.findall(r"^\| `(\w+)` \| ([\d–]+) \| (\w+) \| ([rw]) \| ([^|]*) \| (.+) \|$", doc, re.MULTILINE)
    assert {r[0] for r in rows} == set(m.fields)
    for name, addr, typ, access, unit, meaning in rows:
        f = m.field(name)
        assert addr == (str(f.address) if f.size == 1 else f"{f.address}–{f.last}"), name
        assert (typ, access, unit.strip(), meaning.strip()) == (f.type, f.access, f.unit, f.description), name
    reserved = re.search(r"Registers not listed \(([\d–, ]+)\) are reserved", doc).group(1)
    listed = []
    for part in reserved.split(","):
        a, _, b = part.strip().partition("–")
        listed += list(range(int(a), int(b or a) + 1))
    assert listed == m.reserved()
    for key, value in m.timing.items():
        assert f"**{value}**" in doc or f"**{value} ms**" in doc, key
    for code in GateFault:
        if code:
            assert re.search(rf"^\| {code.value} \| {code.name} \|", doc, re.MULTILINE), code


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_a_program_of_an_older_interface_version_works_without_the_fluorescence_lights(version):
    """Version 3 only added uv_strobe (register 29, section 8): a version 2 program runs the
    line, the client never touching 29, until alternate frames need it; version 1 (no lot
    number) and versions the profile does not know are refused."""
    clock = VirtualClock(start=50.0, auto_advance=False)
    plc = DocPlc(clock, lambda t: int(round(t * CPS)), version=version)
    server = RawModbusServer(plc, late_s=0.3)
    client = PlcClient(plc_config(server.port, timeout_s=0.15), clock)
    try:
        client.connect()
        client.set_outputs(Infeed.RUN, StackLight.GREEN, False, GateMode.AUTO)
        assert client.oldest_version == 2
        if version not in (2, 3):
            with pytest.raises(PlcProtocolError, match=f"implements interface version {version}, the profile"):
                cycle(clock, client, 0.2)
            return
        st = cycle(clock, client, 0.2)  # beats and polls, with no error
        assert st.feeder_running and client.plc_version == version
        seq = client.divert(int(clock.now() * CPS) + 200, 7)
        st = cycle(clock, client, 0.6)
        assert st.done_seq == seq and [s for s, _, _ in plc.taken] == [seq]
        client.set_uv_strobe(True)
        if version == 2:
            with pytest.raises(PlcProtocolError, match="version 2, which has no uv_strobe .*need a program of that"):
                cycle(clock, client, 0.1)
        else:
            cycle(clock, client, 0.1)
            assert plc.uv_strobing
    finally:
        client.close()
        server.close()


def test_diverts_fire_at_their_count_each_taken_once(rig):
    clock, plc, server, client = rig
    cycle(clock, client, 0.1)
    now = int(clock.now() * CPS)
    seqs = [client.divert(now + 200 + 100 * k, 1000 + k) for k in range(5)]
    st = cycle(clock, client, 1.2)
    assert st.done_seq == st.confirmed_seq == seqs[-1]
    assert [(s, i) for s, _, i in plc.taken] == [(s, 1000 + k) for k, s in enumerate(seqs)]
    opened = [t for t, s in plc.opened if s]
    want = [now + 200 + 100 * k for k in range(5)]
    assert len(opened) == 5 and all(0 <= t * CPS - c <= 5 + 1e-6 for t, c in zip(opened, want))  # within one 5 ms scan


@pytest.mark.parametrize("kind", ["lost", "late", "dropped", "exception", "exception_applied"])
def test_a_cut_commit_is_taken_once(rig, kind):
    clock, plc, server, client = rig
    cycle(clock, client, 0.1)
    server.inject(DIV_SEQ, kind, code=4)
    seq = client.divert(int(clock.now() * CPS) + 500, 42)
    errors: list[str] = []
    st = cycle(clock, client, 1.0, errors=errors)
    assert errors, f"a {kind} commit was not noticed"
    assert [s for s, _, _ in plc.taken] == [seq], plc.taken
    assert st.done_seq == seq and client.pending_diverts() == 0


@pytest.mark.parametrize("code", EXCEPTION_CODES)
def test_each_exception_on_the_status_read_is_an_error_then_recovers(rig, code):
    clock, plc, server, client = rig
    cycle(clock, client, 0.1)
    server.inject(server.STATUS_READ, "exception", code=code)
    clock.advance(0.05)
    client.beat()
    with pytest.raises(PlcCommError, match=r"line PLC"):
        client.poll()
    assert cycle(clock, client, 0.1).safety_ok


def test_away_mute_and_back(rig):
    clock, plc, server, client = rig
    cycle(clock, client, 0.1)
    server.down()
    errors: list[str] = []
    cycle(clock, client, 0.2, errors=errors)
    assert errors
    server.up()
    server.mute = True
    errors.clear()
    cycle(clock, client, 0.1, errors=errors)
    assert errors, "a PLC that accepts and never answers is not a PLC"
    server.mute = False
    st = cycle(clock, client, 0.3, errors=[])
    assert st is not None and st.safety_ok


def test_plc_faults_the_document_allows(rig):
    clock, plc, server, client = rig
    st = cycle(clock, client, 0.2)
    assert st.feeder_running and not st.safe_state
    plc.safety = False
    st = cycle(clock, client, 0.1)
    assert not st.safety_ok and not st.feeder_running
    plc.safety = True
    clock.advance(0.6)  # the line misses its heartbeat past watchdog_ms
    st = client.poll()
    assert st.safe_state and plc.opened[-1][1] == 0 and not st.feeder_running
    st = cycle(clock, client, 0.1)
    assert not st.safe_state
    plc.jammed = True
    client.divert(int(clock.now() * CPS) + 100, 7)
    st = cycle(clock, client, 0.3)
    assert st.gate_state == GateState.FAULT and st.gate_fault == GateFault.NOT_CONFIRMED
    plc.jammed = False
    client.reset_gate()
    assert cycle(clock, client, 0.1).gate_state == GateState.READY
    client.divert(int(clock.now() * CPS) - 100, 8)
    assert cycle(clock, client, 0.1).gate_fault == GateFault.LATE
    plc.running = False
    with pytest.raises(PlcStalledError):
        cycle(clock, client, 1.0)


def test_the_lot_the_plant_sets_on_the_plc_is_read_as_32_bits(rig):
    clock, plc, server, client = rig
    assert cycle(clock, client, 0.1).lot_number == 0
    plc.set_lot(4_100_412)  # above 65535: both words
    assert cycle(clock, client, 0.1).lot_number == 4_100_412


def test_the_uv_strobe_is_asked_for_and_off_in_the_safe_state_and_with_the_relay_open(rig):
    clock, plc, server, client = rig
    cycle(clock, client, 0.1)
    assert not plc.uv_strobing  # white light only until the line asks
    client.set_uv_strobe(True)
    cycle(clock, client, 0.1)
    assert plc.uv_strobing
    plc.safety = False  # the hood opened: never UV light
    cycle(clock, client, 0.1)
    assert not plc.uv_strobing
    plc.safety = True
    clock.advance(0.6)  # the line's heartbeat stops: the safe state
    assert client.poll().safe_state and not plc.uv_strobing
    cycle(clock, client, 0.1)
    assert plc.uv_strobing
    client.set_uv_strobe(False)
    cycle(clock, client, 0.1)
    assert not plc.uv_strobing


def test_queuing_a_divert_never_waits_for_the_plcs_link():
    """The PLC loop writes a divert to a PLC whose answer is held; meanwhile the frame loop
    queues the next divert: it must not wait for that answer (no lock held during I/O)."""
    clock = VirtualClock(start=50.0, auto_advance=False)
    entered, release = threading.Event(), threading.Event()

    class HeldPlc(DocPlc):
        def write(self, address, values):
            if address == 30:  # the divert block: held until the test lets it go
                entered.set()
                release.wait(5.0)
            return super().write(address, values)

    plc = HeldPlc(clock, lambda t: int(round(t * CPS)))
    server = RawModbusServer(plc)
    client = PlcClient(plc_config(server.port, timeout_s=5.0), clock)
    try:
        client.connect()
        client.divert(int(clock.now() * CPS) + 500, 1)
        polling = threading.Thread(target=client.poll, daemon=True)
        polling.start()
        assert entered.wait(5.0)  # the PLC loop is inside its write now
        queued = threading.Thread(target=client.divert, args=(int(clock.now() * CPS) + 600, 2), daemon=True)
        queued.start()
        queued.join(2.0)
        assert not queued.is_alive() and not release.is_set()
        assert client.pending_diverts() == 2
    finally:
        release.set()
        client.close()
        server.close()


def test_a_gate_that_fails_while_held_open_is_one_alarm_for_what_reached_it_since():
    """The line's reject gate against the document's PLC: held open while the line waits for its
    camera, the gate jams; the line knows no scallop of that spell one by one, so one critical
    alarm, a person's to acknowledge, says what went on and since when."""
    from scallop.app.alarms import Alarms
    from scallop.app.line.reject import RejectGate
    from scallop.robot.belt import Belt

    clock = VirtualClock(start=50.0, auto_advance=False)
    plc = DocPlc(clock, lambda t: int(round(t * CPS)))
    server = RawModbusServer(plc, late_s=0.3)
    alarms = Alarms()
    gate = RejectGate(plc_config(server.port, 0.15), Belt(1.0, 1), alarms, clock, lambda: 5000.0, lambda: 300.0)
    try:
        clock.advance(0.05)
        gate.service(state="running", critical_unacked=False, warnings=False)  # the line ran
        for _ in range(4):
            clock.advance(0.05)
            gate.service(state="waiting_camera", critical_unacked=False, warnings=True)
        assert gate.status.gate_state == GateState.OPEN and gate.all_to_rework == "waiting_camera"
        plc.jammed = True
        for _ in range(3):
            clock.advance(0.05)
            gate.service(state="waiting_camera", critical_unacked=False, warnings=True)
        assert gate.status.gate_state == GateState.FAULT and gate.status.gate_fault == GateFault.NOT_CONFIRMED
        a = alarms.get("plc.held_open_failed.1")
        assert a is not None and a.severity == "critical" and a.code == "plc.held_open_failed"
        assert "NOT_CONFIRMED" in a.text and a.params["since"] in a.text
        assert gate.waiting_for_a_person() and gate.summary()["held_open_failed"] == 1
        assert gate.rework_status("waiting_camera") == {}  # a jammed gate sends nothing to rework
        clock.advance(0.05)
        gate.service(state="waiting_camera", critical_unacked=True, warnings=True)
        assert alarms.get("plc.held_open_failed.2") is None  # one alarm for one failure
    finally:
        gate.close()
        server.close()
