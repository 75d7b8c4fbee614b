"""The simulator's ground truth, offered to whoever runs a line on it.

Nothing in the line asks the simulator what really happened; these observers are attached
by whoever builds a simulated line (the ``scallop run`` demo, the scenario bench, tests):

* :class:`SimPickGrader` — what a finished pick did to its scallop, from the simulated arm's
  own record (the role an inspection camera after the arms plays on a real line);
* :class:`PassedScallops` — every scallop of the world that went past the arms, and whether
  it still carries its uro (``scallop run --duration`` prints it beside the line's counts).
"""

from __future__ import annotations

from scallop.sim.arm import SimArm
from scallop.sim.world import SimWorld


class SimPickGrader:
    """``grade(arm, target_id)``: the simulated arm's verdict on its pick of ``target_id``."""

    def __init__(self, arms: dict[str, SimArm]) -> None:
        self.arms = arms

    def grade(self, arm: str, target_id: int) -> str | None:
        sim = self.arms.get(arm)
        if sim is None:
            return None
        for rec in reversed(sim.records):
            if rec.target_id == target_id and rec.grade is not None:
                return rec.grade
        return None


class PassedScallops:
    """Follows the world's scallops frame by frame (``on_frame``) and tells how many went
    past ``last_x_mm`` (the last pick window's downstream end) with their uro:
    ``uro_left_on_past_arms`` counts them *before* the reject gate, so the ones the gate then
    diverted to rework are in it too. Whether a uro left the line is judged at the gate by the
    scenario bench (``scallop sim run``: ``uro_escaped``).

    ``unseen_arms``: arms the world cannot see (a real arm in a dry run): what they pull off
    never leaves the simulated scallops, so how many passed with their uro is unknown (None)."""

    def __init__(self, world: SimWorld, last_x_mm: float, unseen_arms: list[str] | None = None) -> None:
        self.world = world
        self.last_x_mm = last_x_mm
        self.unseen_arms = list(unseen_arms or [])
        self._ledger: dict[int, dict] = {}

    def on_frame(self, frame) -> None:
        for s in self.world.scallops_at(frame.timestamp):
            row = self._ledger.get(s.id)
            if row is None:
                row = self._ledger[s.id] = {"had_uro": s.has_uro and not s.upside_down, "x": s.center_B[0]}
            row["x"] = s.center_B[0]
            row["has_uro"] = s.has_uro

    def summary(self) -> dict:
        passed = [r for r in self._ledger.values() if r["x"] > self.last_x_mm]
        with_uro = [r for r in passed if r["had_uro"]]
        out = {
            "passed": len(passed),
            "passed_with_uro": len(with_uro),
            "uro_left_on_past_arms": None if self.unseen_arms else sum(1 for r in with_uro if r["has_uro"]),
            "grades": dict(self.world.grades),
        }
        if self.unseen_arms:
            out["not_graded_arms"] = list(self.unseen_arms)
        return out
