"""The controller's command sequence counter on disk, so a restart never reuses a number."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from scallop.robot.errors import RobotConfigError


class SeqStore:
    """The controller's sequence counter, persisted with an atomic replace so a restarted
    controller continues after the last number it may have sent."""

    def __init__(self, path: str | os.PathLike | None, arm: str = "") -> None:
        self.path = Path(path) if path else None
        self.arm = arm
        self._mem = 0

    def load(self) -> int:
        if self.path is None or not self.path.exists():
            return self._mem
        try:
            data = json.loads(self.path.read_text())
            counter = int(data["counter"])
            if counter < 0:
                raise ValueError("negative counter")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RobotConfigError(
                f"arm {self.arm!r}: state file {self.path} is unreadable ({e}); it holds the "
                "command sequence counter: fix or remove it (removing is safe: the counter "
                "then restarts after the arm's own sequence)"
            ) from None
        return counter

    def save(self, counter: int) -> None:
        self._mem = int(counter)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"arm": self.arm, "counter": int(counter)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
