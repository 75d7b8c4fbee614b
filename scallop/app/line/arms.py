"""The arms as the line drives them: one connection each, served without holding up the others.

:class:`ArmDrivers` owns every arm's :class:`~scallop.robot.arm.ArmClient` and the
:class:`~scallop.robot.scheduler.Scheduler` that shares the targets among them. On the
simulator's virtual clock the line steps them all from its one thread, in a fixed order (so a
seed gives the same run); in real time each arm gets a thread of its own that serves only it,
so an arm that answers slowly, or not at all, delays nobody else — not the other arms, not
the frame loop, not the screen (the scheduler's lock is never held during Modbus I/O).

Each driver also keeps its arm's alarm on the screen: what state it is in, in plain words.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from scallop.app.alarms import Alarms
from scallop.app.line_api import ArmStatus
from scallop.robot.arm import ArmClient
from scallop.robot.belt import ConveyorTracker
from scallop.robot.config import ArmConfig
from scallop.robot.errors import RobotError
from scallop.robot.scheduler import ArmLane, Scheduler

# What an arm's state means to an operator, when it needs attention: the English text the
# record keeps, and the cause the screen shows in the operator's language (alarm.<code> in
# scallop/app/web/i18n, with {arm} and {detail}).
ARM_ALARM_TEXT = {
    "disconnected": "not connected",
    "stalled": "heartbeat stalled: no new picks",
    "fault": "in fault",
    "estop": "emergency stop",
}
ARM_ALARM_CODE = {state: f"arm.{state}" for state in ARM_ALARM_TEXT}
# A state must last this long before it is an alarm: the arm still reads "fault" for a poll
# after RESET, and a heartbeat late once under load is not worth an operator's attention. The
# arm client refuses picks at once either way (can_accept), so this delays only the alarm.
ARM_ALARM_AFTER_S = 1.0


class ArmDrivers:
    def __init__(
        self,
        configs: list[ArmConfig],
        conveyor: ConveyorTracker,
        clock,
        alarms: Alarms,
        tick_s: float,
    ) -> None:
        self.clock = clock
        self.alarms = alarms
        self.tick_s = tick_s
        self.clients = [ArmClient(a, clock=clock) for a in configs]
        # The next pick is chosen a few ticks before the arm is free; a chained one must land a
        # tick before the release it starts from.
        self.scheduler = Scheduler(
            self.clients,
            conveyor,
            clock,
            commit_lead_s=max(0.25, 4 * tick_s),
            chain_margin_s=max(0.05, 1.5 * tick_s),
        )
        self._threads: list[threading.Thread] = []
        self._alarm_since: dict[str, tuple[str, float]] = {}  # arm -> (state, first seen)

    @property
    def lanes(self) -> list[ArmLane]:
        return self.scheduler.lanes

    def connect(self) -> None:
        """Connect every arm; one that is not there is an alarm and does not stop the others
        (its driver keeps trying)."""
        for c in self.clients:
            try:
                c.connect()
            except RobotError as e:
                self.alarms.raise_(
                    f"arm:{c.name}.connect",
                    "critical",
                    f"arm:{c.name}",
                    f"arm {c.name}: {e}",
                    code="arm.connect",
                    params={"arm": c.name, "detail": str(e)},
                )

    def close(self) -> None:
        self.stop_threads()
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass

    # ------------------------------------------------------------------ serving
    def step(self) -> None:
        """Serve every arm once, upstream first (the virtual-clock driver)."""
        self.scheduler.step()
        for lane in self.lanes:
            self._alarm(lane.client)

    def serve(self, lane: ArmLane) -> None:
        self.scheduler.serve(lane)
        self._alarm(lane.client)

    def start_threads(
        self,
        active: Callable[[], bool],
        after: Callable[[], None],
        stop: threading.Event,
        on_error: Callable[[str, BaseException], None],
        beat: Callable[[str], None] = lambda _loop: None,
    ) -> list[threading.Thread]:
        """A thread per arm serving it every tick while ``active()``; ``after()`` runs after
        each service (it hands the results on). An unexpected error ends that arm's thread
        through ``on_error`` (the line faults: it never carries on half-working)."""

        def loop(lane: ArmLane) -> None:
            try:
                while not stop.is_set():
                    beat(f"arm {lane.name}")
                    if active():
                        self.serve(lane)
                        after()
                    stop.wait(self.tick_s)
            except Exception as e:
                on_error(f"arm {lane.name}", e)

        self._threads = [
            threading.Thread(target=loop, args=(lane,), name=f"line-arm-{lane.name}", daemon=True)
            for lane in self.lanes
        ]
        for t in self._threads:
            t.start()
        return self._threads

    def stop_threads(self) -> None:
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5.0)
        self._threads = []

    def _alarm(self, c: ArmClient) -> None:
        key = f"arm:{c.name}"
        st = c.state_name
        if st in ARM_ALARM_TEXT:
            since = self._alarm_since.get(c.name)
            if since is None or since[0] != st:
                since = self._alarm_since[c.name] = (st, self.clock.now())
            if self.clock.now() - since[1] < ARM_ALARM_AFTER_S and not self.alarms.is_active(key):
                return
            alarm = c.alarm
            self.alarms.raise_(
                key,
                "critical",
                key,
                f"arm {c.name}: {ARM_ALARM_TEXT[st]}" + (f" ({alarm})" if alarm else ""),
                code=ARM_ALARM_CODE[st],
                params={"arm": c.name, "detail": alarm or ""},
            )
        else:
            self._alarm_since.pop(c.name, None)
            self.alarms.clear(key)
            self.alarms.clear(f"{key}.connect")

    # ------------------------------------------------------------------ control
    def reset_faults(self) -> None:
        """RESET every arm in fault or e-stop (RESET also takes an arm out of ESTOP once its
        button is released, docs/robot-interface.md)."""
        for c in self.clients:
            try:
                c.poll()
                if c.state_name in ("fault", "estop"):
                    c.reset_fault()
            except RobotError as e:
                self.alarms.raise_(
                    f"arm:{c.name}.reset",
                    "warning",
                    f"arm:{c.name}",
                    f"reset failed: {e}",
                    code="arm.reset_failed",
                    params={"arm": c.name, "detail": str(e)},
                )

    def send_idle_home(self) -> None:
        for c in self.clients:
            try:
                if c.connected and c.state_name == "idle":
                    c.move_ready()
            except RobotError:
                pass

    # ------------------------------------------------------------------ reading
    def statuses(self, tally: Callable[[str], tuple[int, int, str, float]]) -> list[ArmStatus]:
        out = []
        for c in self.clients:
            picks, removed, last, util = tally(c.name)
            out.append(
                ArmStatus(
                    name=c.name,
                    state=c.state_name,
                    connected=c.connected,
                    picks=picks,
                    uro_removed=removed,
                    last_result=last,
                    utilisation=util,
                )
            )
        return out

    def heartbeat_period_s(self) -> float:
        return min((c.config.heartbeat_period_s for c in self.clients), default=self.tick_s)

    def any_waiting(self) -> bool:
        """A queued target waits for an arm that can take it now."""
        return bool(self.scheduler.queue) and any(l.client.can_accept() for l in self.lanes)
