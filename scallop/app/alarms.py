"""Alarms the operator must see and acknowledge.

An alarm is raised under a *key* (``camera.stall``, ``arm:arm1.heartbeat``): raising it again
while it is active does not make a second one, clearing it marks the condition gone but
keeps it on screen until acknowledged. Every change is passed to ``on_change`` (the record).

What the operator reads is a message of the catalogue (``alarm.<code>`` in
scallop/app/web/i18n), in their language: the raiser names its cause as ``code`` with
``params``; a key that is itself a cause in the catalogue (``camera.stall``) is its own code,
with the raiser's text as ``{detail}``. ``text`` stays the English words the record keeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from scallop.app import i18n
from scallop.app.line_api import Alarm


class Alarms:
    def __init__(
        self,
        on_change: Callable[[Alarm], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        keep: int = 200,
    ) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Alarm] = {}
        self._all: list[Alarm] = []
        self._next = 1
        self.on_change = on_change
        self.wall_clock = wall_clock
        self.keep = keep

    def raise_(
        self, key: str, severity: str, source: str, text: str, *, code: str = "", params: dict | None = None
    ) -> Alarm:
        if not code and i18n.has(f"alarm.{key}"):
            code, params = key, {"detail": text, **(params or {})}
        params = {k: str(v) for k, v in (params or {}).items()}
        with self._lock:
            a = self._by_key.get(key)
            if a is not None and a.active:
                if (a.text, a.severity, a.code, a.params) == (text, severity, code, params):
                    return a
                a.text, a.severity, a.code, a.params = text, severity, code, params
            else:
                a = Alarm(
                    id=self._next,
                    time=self.wall_clock(),
                    severity=severity,
                    source=source,
                    text=text,
                    code=code,
                    params=params,
                )
                self._next += 1
                self._by_key[key] = a
                self._all.append(a)
                self._trim()
            snap = replace(a)
        self._notify(snap)
        return snap

    def clear(self, key: str) -> None:
        with self._lock:
            a = self._by_key.get(key)
            if a is None or not a.active:
                return
            a.active = False
            snap = replace(a)
        self._notify(snap)

    def ack(self, alarm_id: int, user: str) -> Alarm:
        with self._lock:
            for a in self._all:
                if a.id == alarm_id:
                    a.acked, a.acked_by = True, user
                    snap = replace(a)
                    break
            else:
                raise KeyError(f"no alarm {alarm_id}")
        self._notify(snap)
        return snap

    def get(self, key: str) -> Alarm | None:
        """The alarm raised under ``key`` (a copy), None if never."""
        with self._lock:
            a = self._by_key.get(key)
            return replace(a) if a is not None else None

    def is_active(self, key: str) -> bool:
        with self._lock:
            a = self._by_key.get(key)
            return bool(a and a.active)

    def visible(self) -> list[Alarm]:
        """Active or not yet acknowledged, newest first."""
        with self._lock:
            return [replace(a) for a in reversed(self._all) if a.active or not a.acked]

    def _trim(self) -> None:
        done = [a for a in self._all if a.acked and not a.active]
        while len(self._all) > self.keep and done:
            self._all.remove(done.pop(0))

    def _notify(self, a: Alarm) -> None:
        if self.on_change is not None:
            try:
                self.on_change(a)
            except Exception:  # the record raises its own alarm; never let it break the caller
                pass
