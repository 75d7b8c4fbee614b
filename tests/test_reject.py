"""Dispositions and the reject gate's requests (scallop/app/line/reject.py): one place for every
scallop, the divert count at the gate, and an alarm for each scallop that could not be diverted.
The PLC itself is tests/test_plc*.py; the whole line at the gate is tests/test_scenario.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from scallop.app.alarms import Alarms
from scallop.app.line.ledger import ScallopOutcome
from scallop.app.line.reject import Disposition, RejectGate, disposition_of
from scallop.robot.belt import Belt
from scallop.robot.plc import GateMode, Infeed, PlcConfig, StackLight
from scallop.sim.clock import VirtualClock
from scallop.sim.plc import SimPlc


def plc_config(plc: SimPlc) -> PlcConfig:
    """The gate 1000 mm down the belt, opening 40 mm before a scallop for 300 ms."""
    return PlcConfig(
        gate_x_mm=1000.0,
        gate_lead_mm=40.0,
        gate_open_ms=300,
        heartbeat_timeout_s=1.0,
        watchdog_ms=1000,
        transport=plc.transport_config(),
    )


def outcome(tid: int, result: str, reason: str = "", u: float = 0.0) -> ScallopOutcome:
    decision = SimpleNamespace(track=SimpleNamespace(u=u, v=0.0))
    return ScallopOutcome(tid, decision, result=result, reason=reason)


@pytest.mark.parametrize(
    "result, reason, want",
    [
        ("picked", "", Disposition.PICKED),
        ("skipped", "no_uro", Disposition.PASSED),
        ("skipped", "no_capacity", Disposition.DIVERTED),
        ("skipped", "ambiguous", Disposition.DIVERTED),
        ("skipped", "cut_by_border", Disposition.DIVERTED),
        ("skipped", "line_paused", Disposition.DIVERTED),
        ("skipped", "plc_lost", Disposition.DIVERTED),
        ("failed", "arm_empty", Disposition.DIVERTED),
        ("failed", "arm_aborted", Disposition.DIVERTED),
    ],
)
def test_only_a_scallop_seen_without_a_uro_passes_unpicked(result, reason, want):
    assert disposition_of(outcome(1, result, reason)) == want


@pytest.mark.parametrize("grade", ["missed", "adductor_hit", "meat_hit", "empty"])
def test_a_pick_the_pick_check_saw_fail_goes_to_rework(grade):
    oc = outcome(1, "picked")
    oc.grade = grade
    assert disposition_of(oc) == Disposition.DIVERTED
    oc.grade = "uro_removed"
    assert disposition_of(oc) == Disposition.PICKED


def test_without_a_plc_every_scallop_that_needed_diverting_is_alarmed():
    alarms = Alarms()
    gate = RejectGate(None, Belt(10.0, 1), alarms, VirtualClock(), lambda: None, lambda: 0.0)
    assert alarms.is_active("plc.none")
    done = [outcome(1, "picked"), outcome(2, "skipped", "no_uro"), outcome(3, "skipped", "no_capacity")]
    gate.dispose(done)
    assert [oc.extra["disposition"] for oc in done] == ["picked", "passed", "not_diverted"]
    assert done[2].extra["not_diverted"] == "no line PLC is configured"
    assert alarms.is_active("plc.not_diverted.3") and alarms.get("plc.not_diverted.3").code == "plc.not_diverted"
    assert gate.waiting_for_a_person()
    alarms.ack(alarms.get("plc.not_diverted.3").id, "op")
    assert not gate.waiting_for_a_person() and not alarms.is_active("plc.not_diverted.3")
    assert gate.summary()["dispositions"] == {"picked": 1, "passed": 1, "diverted": 0, "not_diverted": 1}


def test_a_divert_is_asked_for_the_count_at_the_gate_or_refused_when_too_late():
    clock = VirtualClock(start=10.0, auto_advance=False)
    belt = Belt(10.0, -1)  # 10 counts/mm, raw counts fall downstream
    plc = SimPlc(clock, lambda t: -int(round(t * 3000))).start()  # 300 mm/s
    cfg = plc_config(plc)
    alarms = Alarms()
    now_count = {"c": 19_000.0}  # belt counts (rising downstream)
    gate = RejectGate(cfg, belt, alarms, clock, lambda: now_count["c"], lambda: 300.0)
    try:
        gate.service(state="running", critical_unacked=False, warnings=False)
        # What went under the camera before the line ran is at the gate within 1040 mm of belt:
        # the gate stays held open until then.
        assert gate.client.outputs.gate_mode == GateMode.DIVERT_ALL
        now_count["c"] = 30_000.0
        gate.service(state="running", critical_unacked=False, warnings=False)
        # Material position u = x - travel: at belt count C its centre is at u + C/10 mm.
        near = outcome(5, "skipped", "no_capacity", u=1000.0 - 40.0 - 3050.0)  # at the gate's count 30 500
        late = outcome(6, "skipped", "no_capacity", u=1000.0 - 40.0 - 3001.0)  # due in 10 counts: too late
        gate.dispose([near, late])
        assert near.extra["disposition"] == "diverted" and late.extra["disposition"] == "not_diverted"
        assert "reached the gate before the decision came" in late.extra["not_diverted"]
        assert gate.waiting_for_a_person()  # scallop 6: someone must see to it
        alarms.ack(alarms.get("plc.not_diverted.6").id, "op")
        for _ in range(2):  # written at one poll, its acknowledgement read at the next
            clock.advance(0.05)
            gate.service(state="running", critical_unacked=False, warnings=False)
        assert list(gate.client.sent) == [(1, 5, -30_500)]  # raw count: the encoder counts down
        assert gate.client.outputs.gate_mode == GateMode.AUTO
        assert gate.client.outputs.infeed == Infeed.RUN and gate.client.outputs.stack_light == StackLight.GREEN
        gate.service(state="waiting_camera", critical_unacked=True, warnings=True)
        o = gate.client.outputs
        assert (o.gate_mode, o.infeed, o.stack_light, o.horn) == (
            GateMode.DIVERT_ALL,
            Infeed.HOLD,
            StackLight.RED,
            True,
        )
    finally:
        gate.close()
        plc.close()


def test_a_frame_the_line_could_not_track_holds_the_gate_open_for_what_was_under_the_camera():
    clock = VirtualClock(start=10.0, auto_advance=False)
    belt = Belt(10.0, -1)
    plc = SimPlc(clock, lambda t: -int(round(t * 3000))).start()
    now_count = {"c": 30_000.0}
    gate = RejectGate(plc_config(plc), belt, Alarms(), clock, lambda: now_count["c"], lambda: 300.0)
    try:
        gate.service(state="running", critical_unacked=False, warnings=False)
        now_count["c"] = 50_000.0  # what went under the camera before the start has passed the gate
        gate.service(state="running", critical_unacked=False, warnings=False)
        assert gate.client.outputs.gate_mode == GateMode.AUTO
        gate.doubt()  # a frame with scallops, not tracked
        gate.service(state="running", critical_unacked=False, warnings=False)
        assert gate.client.outputs.gate_mode == GateMode.DIVERT_ALL
        # Held open until the belt under the camera then has passed the gate (1040 mm here).
        now_count["c"] = 50_000.0 + 10_000.0
        gate.service(state="running", critical_unacked=False, warnings=False)
        assert gate.client.outputs.gate_mode == GateMode.DIVERT_ALL
        now_count["c"] = 50_000.0 + 10_500.0
        gate.service(state="running", critical_unacked=False, warnings=False)
        assert gate.client.outputs.gate_mode == GateMode.AUTO
    finally:
        gate.close()
        plc.close()


def test_a_feeder_that_stands_while_asked_to_run_is_a_warning():
    class StuckFeeder(SimPlc):
        feeder_running = property(lambda self: False)

    clock = VirtualClock(start=10.0, auto_advance=False)
    plc = StuckFeeder(clock, lambda t: int(round(t * 3000))).start()
    cfg = plc_config(plc)
    alarms = Alarms()
    gate = RejectGate(cfg, Belt(10.0, 1), alarms, clock, lambda: 30_000.0, lambda: 300.0)
    try:
        for _ in range(2):
            clock.advance(0.05)
            gate.service(state="running", critical_unacked=False, warnings=False)
        assert gate.client.outputs.infeed == Infeed.RUN and alarms.is_active("plc.feeder")
        gate.service(state="stopped", critical_unacked=False, warnings=False)  # asked to hold: no warning
        clock.advance(0.05)
        gate.service(state="stopped", critical_unacked=False, warnings=False)
        assert not alarms.is_active("plc.feeder")
    finally:
        gate.close()
        plc.close()


def test_the_gate_held_open_is_told_with_its_cause_and_recorded_spell_by_spell():
    """Everything to rework says so: the screen's cause while the gate is held open, an event
    when a spell begins and one with its length when it ends, the seconds in all."""
    clock = VirtualClock(start=10.0, auto_advance=False)
    plc = SimPlc(clock, lambda t: -int(round(t * 3000))).start()
    now_count = {"c": 30_000.0}
    events = []
    gate = RejectGate(
        plc_config(plc),
        Belt(10.0, -1),
        Alarms(),
        clock,
        lambda: now_count["c"],
        lambda: 300.0,
        event=lambda kind, user, detail=None: events.append((clock.now(), kind, detail)),
    )

    def serve(state, advance=1.0):
        clock.advance(advance)
        gate.service(state=state, critical_unacked=False, warnings=False)

    try:
        serve("running", 0.0)  # launched: the count not known yet
        assert gate.all_to_rework == "stopped"  # what was on the belt before the start
        serve("stopped", 0.0)
        assert gate.all_to_rework == "stopped" and gate.rework_status("stopped") == {}  # idle: no banner
        serve("running")  # started: what was on the belt before goes to rework
        assert gate.rework_status("running") == {"why": "stopped", "for_s": 1.0}
        now_count["c"] = 50_000.0  # past the camera-to-gate travel
        serve("running")
        assert gate.client.outputs.gate_mode == GateMode.AUTO and gate.rework_status("running") == {}
        assert events == [
            (10.0, "all_to_rework", {"why": "stopped"}),
            (12.0, "gate_auto", {"after": "stopped", "held_s": 2.0}),
        ]
        serve("waiting_camera", 5.0)  # an encoder or camera alarm
        assert gate.rework_status("waiting_camera") == {"why": "waiting_camera", "for_s": 0.0}
        serve("running", 3.0)  # back; catching up keeps the cause that opened it
        assert gate.rework_status("running") == {"why": "waiting_camera", "for_s": 3.0}
        gate.doubt()
        serve("running")
        assert gate.all_to_rework == "counts_in_doubt"  # the banner says what holds it now
        now_count["c"] = 70_000.0
        serve("running")
        assert gate.rework_status("running") == {} and gate.all_to_rework == ""
        assert [e[1] for e in events] == ["all_to_rework", "gate_auto", "all_to_rework", "gate_auto"]
        assert events[-1][2] == {"after": "waiting_camera", "held_s": 5.0}  # the record: what opened it
        assert gate.summary()["all_to_rework"] == {"spells": 2, "seconds": 7.0, "now": ""}
    finally:
        gate.close()
        plc.close()


def test_without_a_plc_a_blind_spell_is_one_alarm_and_no_banner():
    """No PLC at all (so no gate): what passes under the camera while the line cannot vouch for it
    goes on unchecked, and one critical alarm says so (the PLC's absence is no cause of its own)."""
    clock = VirtualClock(start=10.0, auto_advance=False)
    alarms = Alarms()
    gate = RejectGate(None, Belt(10.0, 1), alarms, clock, lambda: 30_000.0, lambda: 300.0)
    gate.service(state="running", critical_unacked=False, warnings=False)
    assert gate.all_to_rework == "" and alarms.get("plc.blind_no_gate.1") is None  # nothing to catch up: no gate
    clock.advance(1.0)
    gate.service(state="waiting_camera", critical_unacked=False, warnings=True)
    a = alarms.get("plc.blind_no_gate.1")
    assert a is not None and a.severity == "critical" and "no reject gate is fitted" in a.text
    assert gate.rework_status("waiting_camera") == {}  # nothing goes to rework: no banner saying so
    gate.service(state="waiting_camera", critical_unacked=True, warnings=True)
    assert gate.summary()["blind_no_gate"] == 1


def test_a_gate_jammed_before_the_line_ever_ran_is_no_alarm_of_scallops_gone_on_and_the_banner_starts_at_start():
    clock = VirtualClock(start=10.0, auto_advance=False)
    plc = SimPlc(clock, lambda t: -int(round(t * 3000))).start()
    now_count = {"c": 30_000.0}
    alarms = Alarms()
    gate = RejectGate(plc_config(plc), Belt(10.0, -1), alarms, clock, lambda: now_count["c"], lambda: 300.0)
    try:
        plc.jam_gate()
        for _ in range(6):  # a gate jammed since the last shift, the line stopped at launch
            clock.advance(100.0)
            gate.service(state="stopped", critical_unacked=False, warnings=False)
        assert alarms.is_active("plc.gate") and alarms.get("plc.held_open_failed.1") is None
        plc.jam_gate(False)
        gate.reset()
        clock.advance(0.1)
        gate.service(state="stopped", critical_unacked=True, warnings=True)
        clock.advance(0.1)
        gate.service(state="running", critical_unacked=False, warnings=False)  # START after 10 min stopped
        clock.advance(0.1)
        gate.service(state="running", critical_unacked=False, warnings=False)
        st = gate.rework_status("running")
        assert st["why"] == "stopped" and st["for_s"] <= 0.2, st  # not the minutes it stood stopped
    finally:
        gate.close()
        plc.close()


def test_a_pick_still_unresolved_near_the_gate_is_diverted_before_its_outcome_comes():
    """An arm gone off the network mid-pick reports the pick when it is back, seconds later: by
    then its scallop has passed the gate (an outside try: one undiverted scallop each time a
    cable was pulled). The gate diverts a pick still unresolved as its scallop nears the gate;
    whatever the arm says afterwards, the scallop is in the rework lane, and asked for once."""
    clock = VirtualClock(start=10.0, auto_advance=False)
    belt = Belt(10.0, -1)
    plc = SimPlc(clock, lambda t: -int(round(t * 3000))).start()  # 300 mm/s
    now_count = {"c": 30_000.0}
    # Gate count of a scallop at u: (1000 - 40 - u) * 10. Scallop 7 is due at 30 900 (0.3 s away,
    # inside the lookahead of 0.35 s at 300 mm/s = 1050 counts), 8 at 32 000 (0.67 s), both picks
    # handed to an arm and unresolved; 9 also due soon, already finished.
    picked_late, failed_late = outcome(7, "", u=960.0 - 3090.0), outcome(8, "", u=960.0 - 3200.0)
    pending = {7: picked_late, 8: failed_late}
    gate = RejectGate(
        plc_config(plc),
        belt,
        Alarms(),
        clock,
        lambda: now_count["c"],
        lambda: 300.0,
        pending=lambda: list(pending.values()),
    )
    try:
        for c in (10_000.0, 30_000.0, 30_000.0, 30_000.0):  # past the start's hold; written, then read
            now_count["c"] = c
            clock.advance(0.05)
            gate.service(state="running", critical_unacked=False, warnings=False)
        assert list(gate.client.sent) == [(1, 7, -30_900)]  # 8 is not near yet
        clock.advance(0.05)
        gate.service(state="running", critical_unacked=False, warnings=False)
        assert len(gate.client.sent) == 1  # asked for once
        # The arm comes back: it had finished the pick. The scallop is in the rework lane all the same.
        picked_late.result = "picked"
        del pending[7]
        gate.dispose([picked_late])
        assert picked_late.extra["disposition"] == "diverted"
        assert picked_late.extra["divert"] == "its pick was not known to be done when it reached the gate"
        # Good product to rework is safe but never silent: on a healthy arm, the gate is too near.
        warn = gate.alarms.get("plc.gate_near")
        assert warn.active and warn.severity == "warning" and warn.text.startswith("1 picked scallop(s) went to rework")
        # 8 nears the gate unresolved: diverted too; its failure, when it comes, asks for nothing more.
        now_count["c"] = 31_000.0
        for _ in range(2):
            clock.advance(0.05)
            gate.service(state="running", critical_unacked=False, warnings=False)
        assert [s[1] for s in gate.client.sent] == [7, 8]
        failed_late.result, failed_late.reason = "failed", "arm_unknown"
        del pending[8]
        gate.dispose([failed_late])
        assert failed_late.extra["disposition"] == "diverted" and len(gate.client.sent) == 2
        s = gate.summary()
        assert s["unresolved_diverted"] == 2 and s["picked_to_rework"] == 1 and s["dispositions"]["not_diverted"] == 0
    finally:
        gate.close()
        plc.close()
