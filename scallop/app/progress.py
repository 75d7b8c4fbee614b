"""Progress of long command-line work: a bar on a terminal, plain lines in a log.

Training, data-set generation, scenario runs and calibration over many photos take minutes.
On a terminal they show a tqdm bar; when stderr is a file or a pipe (a service's journal, CI)
they write one plain line every ``every_s`` seconds and one at the end, so a log stays
readable and still shows that the work goes on.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        stream: TextIO | None = None,
        every_s: float = 10.0,
        bar: bool | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.done = 0
        self.note = ""
        self._t0 = time.monotonic()
        self._last = self._t0
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        if tty if bar is None else bar:
            from tqdm import tqdm

            # No monitor thread: the bar is updated by the work itself.
            tqdm.monitor_interval = 0
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, leave=True)

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()

    def write(self, message: str) -> None:
        """A line of its own, above the bar when there is one."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def update(self, n: int = 1, note: str = "") -> None:
        self.advance_to(self.done + n, note)

    def advance_to(self, done: int, note: str = "") -> None:
        step = done - self.done
        self.done = done
        if note:
            self.note = note
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(step)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line()

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        rate = self.done / max(1e-9, time.monotonic() - self._t0)
        extra = f", {self.note}" if self.note else ""
        print(
            f"{self.desc}: {self.done}{of} {self.unit} ({rate:.1f} {self.unit}/s){extra}", file=self.stream, flush=True
        )

    def close(self, failed: bool = False) -> None:
        """End the bar; a log gets a last line unless the work failed (its error says why)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not failed:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)
