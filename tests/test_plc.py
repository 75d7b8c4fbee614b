"""The line PLC: its client (scallop.robot.plc) against the simulated PLC over real Modbus, on a
virtual clock, and the configuration's checks. The client against a PLC written from the
document alone is tests/test_plc_independent.py."""

from __future__ import annotations

import pytest

from scallop.errors import ConfigError
from scallop.robot.plc import (
    GateFault,
    GateMode,
    GateState,
    Infeed,
    PlcClient,
    PlcCommError,
    PlcConfig,
    PlcStalledError,
    StackLight,
)
from scallop.sim.clock import VirtualClock
from scallop.sim.plc import SimPlc

COUNTS_PER_S = 1000  # the simulated belt: 1000 raw counts a second


def config(transport, **kw) -> PlcConfig:
    base = dict(
        transport=transport,
        gate_x_mm=900.0,
        gate_lead_mm=40.0,
        gate_open_ms=150,
        heartbeat_timeout_s=0.5,
        watchdog_ms=300,
    )
    base.update(kw)
    return PlcConfig(**base)


@pytest.fixture
def rig():
    clock = VirtualClock(start=100.0, auto_advance=False)
    plc = SimPlc(clock, lambda t: int(round(t * COUNTS_PER_S))).start()
    client = PlcClient(config(plc.transport_config()), clock)
    try:
        client.connect()
        yield clock, plc, client
    finally:
        client.close()
        plc.close()


def step(clock, client, seconds: float, every: float = 0.05):
    """Let ``seconds`` pass with the line beating and polling, as its loop does."""
    st = None
    for _ in range(round(seconds / every)):
        clock.advance(every)
        client.beat()
        st = client.poll()
    return st


def test_status_outputs_and_heartbeats(rig):
    clock, plc, client = rig
    client.beat()
    st = step(clock, client, 0.3)
    assert st.safety_ok and st.gate_fitted and st.gate_sensor_fitted and not st.safe_state
    assert st.gate_state == GateState.OPEN and st.gate_fault == GateFault.NONE
    assert not st.feeder_running, "the outputs start at HOLD/RED/DIVERT_ALL until the line says otherwise"
    client.set_outputs(Infeed.RUN, StackLight.GREEN, False, GateMode.AUTO)
    st = step(clock, client, 0.1)
    assert st.feeder_running and plc.infeed == Infeed.RUN
    assert abs(st.belt_count - clock.now() * COUNTS_PER_S) <= 10


def test_a_divert_opens_the_gate_at_its_count_for_its_time(rig):
    clock, plc, client = rig
    client.set_outputs(Infeed.RUN, StackLight.GREEN, False, GateMode.AUTO)
    step(clock, client, 0.1)
    at = int(clock.now() * COUNTS_PER_S) + 400  # 0.4 s from now
    seq = client.divert(at, track_id=77)
    st = step(clock, client, 0.8)
    assert st.ack_seq == st.done_seq == st.confirmed_seq == seq
    (o,) = [o for o in plc.openings if o.seq]  # seq 0: the safe state before the line's first beat
    assert o.seq == seq and o.track_id == 77
    assert abs(o.t_open - at / COUNTS_PER_S) <= 0.006 and abs((o.t_close - o.t_open) - 0.150) <= 0.006
    assert list(client.sent) == [(seq, 77, at)]


def test_divert_all_holds_the_gate_open_until_auto(rig):
    clock, plc, client = rig
    st = step(clock, client, 0.2)  # the line has not said AUTO yet: everything to rework
    assert st.gate_state == GateState.OPEN and plc.gate_open_during(clock.now() - 0.15, clock.now() - 0.1)
    client.set_outputs(Infeed.RUN, StackLight.GREEN, False, GateMode.AUTO)
    st = step(clock, client, 0.1)
    assert st.gate_state == GateState.READY and not plc.gate_open_during(clock.now() - 0.04, clock.now())


def test_the_plc_goes_to_its_safe_state_without_the_line_and_leaves_it_when_it_beats_again(rig):
    clock, plc, client = rig
    client.set_outputs(Infeed.RUN, StackLight.GREEN, False, GateMode.AUTO)
    step(clock, client, 0.2)
    clock.advance(0.5)  # the line stops beating: longer than watchdog_ms (300)
    plc.advance()
    assert plc.safe_state and plc.infeed == Infeed.HOLD and plc.gate_open_during(clock.now() - 0.01, clock.now())
    st = client.poll()
    assert st.safe_state and not st.feeder_running
    st = step(clock, client, 0.2)
    assert not st.safe_state and st.feeder_running and st.gate_state == GateState.READY


def test_a_plc_away_is_a_comm_error_and_comes_back(rig):
    clock, plc, client = rig
    step(clock, client, 0.1)
    plc.go_offline()
    with pytest.raises(PlcCommError, match=r"line PLC \(tcp 127\.0\.0\.1:\d+"):
        client.poll()
    plc.come_back()
    st = step(clock, client, 0.2)
    assert st is not None and not st.safe_state


def test_a_stopped_plc_program_is_a_stalled_heartbeat(rig):
    clock, plc, client = rig
    step(clock, client, 0.2)
    plc.stop_program()
    with pytest.raises(PlcStalledError, match=r"heartbeat has not changed for 0\.\d s \(limit 0\.5 s\)"):
        step(clock, client, 1.0)


def test_a_jammed_gate_is_a_fault_until_reset(rig):
    clock, plc, client = rig
    client.set_outputs(Infeed.RUN, StackLight.GREEN, False, GateMode.AUTO)
    step(clock, client, 0.1)
    plc.jam_gate()
    seq = client.divert(int(clock.now() * COUNTS_PER_S) + 100, 5)
    st = step(clock, client, 0.4)
    assert st.gate_state == GateState.FAULT and st.gate_fault == GateFault.NOT_CONFIRMED
    assert st.done_seq == seq and st.confirmed_seq != seq and not [o for o in plc.openings if o.seq]
    plc.jam_gate(False)
    client.reset_gate()
    st = step(clock, client, 0.1)
    assert st.gate_state == GateState.READY and st.gate_fault == GateFault.NONE


def test_a_gate_that_jams_while_held_open_is_a_fault_at_once(rig):
    """Held open (DIVERT_ALL) is commanded open: a gate the sensor does not see open faults
    then, not only when a single divert comes due (plc-interface.md, section 5)."""
    clock, plc, client = rig
    client.set_outputs(Infeed.RUN, StackLight.AMBER, False, GateMode.DIVERT_ALL)
    st = step(clock, client, 0.1)
    assert st.gate_state == GateState.OPEN
    plc.jam_gate()
    st = step(clock, client, 0.1)
    assert st.gate_state == GateState.FAULT and st.gate_fault == GateFault.NOT_CONFIRMED
    assert not plc.gate_open_during(clock.now() - 0.02, clock.now())
    plc.jam_gate(False)
    client.reset_gate()
    st = step(clock, client, 0.1)
    assert st.gate_state == GateState.OPEN and st.gate_fault == GateFault.NONE


def test_a_request_for_a_count_already_past_is_a_late_fault(rig):
    clock, plc, client = rig
    client.set_outputs(Infeed.RUN, StackLight.GREEN, False, GateMode.AUTO)
    step(clock, client, 0.1)
    client.divert(int(clock.now() * COUNTS_PER_S) - 200, 9)
    st = step(clock, client, 0.1)
    assert st.gate_state == GateState.FAULT and st.gate_fault == GateFault.LATE


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("gate_open_ms", 5, r"plc\.gate_open_ms=5 is out of range: allowed 20\.\.5000"),
        ("heartbeat_timeout_s", float("nan"), r"plc\.heartbeat_timeout_s=nan is not a finite number"),
        ("gate_lead_mm", -1.0, r"plc\.gate_lead_mm=-1\.0 is out of range: allowed 0\.\.500"),
        ("gate_x_mm", float("inf"), r"plc\.gate_x_mm=inf is not a finite number"),
        ("watchdog_ms", 10, r"plc\.watchdog_ms=10 is out of range"),
        ("profile", "nope", r"plc\.profile='nope': no such PLC profile: choose one of generic"),
    ],
)
def test_config_values_are_checked(key, value, words):
    from scallop.robot.config import TransportConfig

    with pytest.raises(ConfigError, match=words):
        cfg = config(TransportConfig(), **{key: value})
        PlcClient(cfg)


def test_a_plc_table_without_its_gate_says_what_is_missing():
    from scallop.app.config import load_config

    with pytest.raises(ConfigError, match=r"^plc: gate_x_mm, gate_open_ms required, not given"):
        load_config(None, {"plc": {"gate_lead_mm": 40.0, "heartbeat_timeout_s": 1.0, "watchdog_ms": 1000}})
    cfg = load_config(
        None,
        {
            "plc": {
                "gate_x_mm": 900.0,
                "gate_lead_mm": 40.0,
                "gate_open_ms": 300,
                "heartbeat_timeout_s": 1.0,
                "watchdog_ms": 1000,
                "transport": {"host": "10.0.0.9", "port": 502},
            }
        },
    )
    assert cfg.plc.gate_x_mm == 900.0 and "line PLC (tcp 10.0.0.9:502 unit 1)" in cfg.real_devices()
