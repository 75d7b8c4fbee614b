"""The line's model loop (docs/model-loop.md): which model is live, a promoted model waiting for
the next frame boundary, the shadow candidate beside it and the frame capture for labelling.

:class:`ModelLoop` loads models off the frame loop (the registry watcher's thread) and hands a
new one over only when the frame loop asks (:meth:`ModelLoop.swap`, between two frames), so no
frame is analysed half by one model and half by another.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from scallop.errors import ConfigError
from scallop.vision.pipeline import Pipeline, PipelineConfig

if TYPE_CHECKING:
    from scallop.app.config import LineConfig

log = logging.getLogger("scallop.line")

# Line time between two rows of the record's shadow table.
SHADOW_ROW_S = 60.0


def configured_model_path(cfg) -> Path:
    """The model file a line without a registry runs: ``vision.model``, else the shipped model
    (the four-channel one on a line with the fluorescence channel)."""
    from scallop.models.runtime import default_model_path, default_uv_model_path

    if cfg.vision.model:
        return Path(cfg.vision.model)
    return Path(default_uv_model_path() if cfg.camera.fluorescence.enabled else default_model_path())


def line_model_path(cfg) -> Path:
    """The model file the line would start on: the registry's live model (its file checked
    against its checksum: DataError when missing or changed; a registry without a live model
    starts on the shipped colour model), else :func:`configured_model_path`. Changes nothing."""
    if cfg.models.registry:
        from scallop.app.registry import Registry
        from scallop.models.runtime import default_model_path

        live = Registry(cfg.models.registry).live_entry()
        return live.path if live is not None else Path(default_model_path())
    return configured_model_path(cfg)


def check_model_file(cfg) -> None:
    """Refuse, before the record's run is opened, a start the model's file alone would refuse
    (:func:`line_model_path`): missing, not a model, or needing a channel the line has not. Its
    metadata is read here; loading it is left to the line's start."""
    from scallop.app.line.channel import NEEDS_CHANNEL
    from scallop.errors import ConfigError
    from scallop.models.runtime import read_model_info

    info = read_model_info(line_model_path(cfg))  # the words the runtime would use
    if info.takes_uv and not cfg.camera.fluorescence.enabled:
        raise ConfigError(NEEDS_CHANNEL)


class ModelLoop:
    """``model``: the live model's ``{"name", "sha256"}``; ``shadow`` and ``capture``: the
    shadow runner and the frame capture once :meth:`open` ran (``shadow`` None without a
    candidate). ``config()`` is the line's configuration as it is now (the panel changes the
    vision thresholds while the line runs); ``publisher`` records the model and capture events;
    ``lock`` is the line's control lock (a swap happens under it)."""

    def __init__(self, config: Callable[[], LineConfig], backend, record, alarms, publisher, clock, lock) -> None:
        self._config = config
        self.backend = backend
        self.record = record
        self.alarms = alarms
        self.publisher = publisher
        self.clock = clock
        self.lock = lock
        self.model: dict = {}
        self.registry = None
        self.shadow = None
        self.capture = None
        self._registry_stamp = 0
        self._pending = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shadow_row_at = -math.inf
        self._scale = math.nan

    @property
    def config(self) -> LineConfig:
        return self._config()

    # ------------------------------------------------------------------ set-up
    def live(self) -> Pipeline:
        """The live model's Pipeline (``model`` says which): the registry's live model when the
        configuration names a registry, else ``vision.model`` (or the shipped model: the
        four-channel one on a line with the fluorescence channel)."""
        from scallop.app.registry import Registry, sha256_of

        cfg = self.config
        if cfg.models.registry:
            self.registry = Registry(cfg.models.registry)
            new = not self.registry.index_path.exists()
            e = self.registry.ensure_live()
            if new:
                # Right on a first start; after a lost or unmounted disk it means the models the
                # plant promoted are gone and the shipped one runs: never without a word (an
                # outside try deleted the folder and the line started the shipped model silently).
                self.alarms.raise_(
                    "vision.registry_new",
                    "warning",
                    "vision",
                    f"models.registry = {cfg.models.registry}: no registry there, a new one was started with "
                    f"the shipped model {e.name} live; if this line ran another model before, restore the "
                    "registry from a backup ('scallop restore') and promote it again",
                    code="vision.registry_new",
                    params={"registry": str(cfg.models.registry), "model": e.name},
                )
                self.publisher.event(
                    "model", "system", {"model": e.name, "sha256": e.sha256, "from": "", "action": "new_registry"}
                )
            self._registry_stamp = self.registry.stamp()
            self.model = {"name": e.name, "sha256": e.sha256}
            return Pipeline(str(e.path), cfg.vision)
        path = configured_model_path(cfg)
        pipe = Pipeline(str(path), config=cfg.vision)  # first: its error names a missing model file
        self.model = {"name": path.stem, "sha256": sha256_of(path)}
        return pipe

    def open(self, scale: float) -> None:
        """Start the capture, the shadow candidate and the registry watcher; ``scale``: the
        frames' mm per pixel (a candidate that cannot take these frames is refused now)."""
        from scallop.app.capture import CaptureSettings, FrameCapture

        self._scale = scale
        cfg = self.config
        belt = self.backend.belt
        record_dir = Path(self.record.path).parent if self.record is not None else Path(".")
        self.capture = FrameCapture(
            CaptureSettings(
                folder=Path(cfg.capture.folder) if cfg.capture.folder else record_dir / "captures",
                budget_bytes=int(cfg.capture.budget_mb * 1e6),
                routine_share=cfg.capture.routine_share,
                low_margin=cfg.capture.low_margin,
                min_uro_confidence=cfg.vision.min_uro_confidence,
            ),
            self.alarms,
            lambda: dict(self.model),
            lambda raw: belt.mm(belt.counts(raw)),
        )
        self.publisher.listeners.append(self.capture.on_outcomes)
        if cfg.vision.shadow_model:
            from scallop.app.shadow import Shadow

            path, model = self._resolve(cfg.vision.shadow_model, "vision.shadow_model")
            pipe = Pipeline(str(path), replace(cfg.vision, threads=1))
            pipe.check_frame(*self.backend.camera_model.image_size, scale)
            try:
                self._check_channel(pipe)
            except ValueError as e:
                raise ConfigError(f"vision.shadow_model={cfg.vision.shadow_model!r}: {e}") from None
            self.shadow = Shadow(
                pipe, model, cfg.vision.shadow_share, cfg.vision.shadow_cpu_share, on_disagreement=self._disagreement
            )
            self._shadow_row_at = self.clock.now() + SHADOW_ROW_S
        if self.registry is not None:
            self._thread = threading.Thread(target=self._watch_registry, name="line-models", daemon=True)
            self._thread.start()

    def _resolve(self, name: str, key: str):
        """A model file, or the name of a model in the registry → (path, {name, sha256})."""
        from scallop.app.registry import sha256_of

        p = Path(name)
        if p.is_file():
            return p, {"name": p.stem, "sha256": sha256_of(p)}
        if self.registry is not None:
            try:
                e = self.registry.get(name)
            except KeyError as ex:
                raise ConfigError(f"{key}={name!r}: no such file, and {ex.args[0]}") from None
            return e.path, {"name": e.name, "sha256": e.sha256}
        raise ConfigError(f"{key}={name!r}: no such model file")

    def _check_channel(self, pipe: Pipeline) -> None:
        """A model that reads the fluorescence channel, on a line without it, is refused; so is
        one whose finder reads it where the camera does not see the whole frame."""
        from scallop.app.line.channel import check_finder_sees

        if pipe.takes_uv and not self.config.camera.fluorescence.enabled:
            raise ValueError(
                "it reads the fluorescence channel, which this line does not have ([camera.fluorescence] "
                'setup = "none"): use a colour-only model'
            )
        check_finder_sees(pipe, self.backend.fluorescence_registration)

    # ------------------------------------------------------------------ per frame
    def on_frame(self, frame, dets, scale: float, channel=None) -> None:
        """An analysed frame (``channel``: the registered fluorescence image the live model
        was given with it, :class:`~scallop.app.line.channel.Registered`): offered to the
        capture and the shadow candidate."""
        if self.capture is not None:
            self.capture.on_analysed(frame, dets, scale, channel=channel)
        if self.shadow is not None:
            self.shadow.offer(frame, dets, scale, channel)
            if self.clock.now() >= self._shadow_row_at:
                self._shadow_row()

    def _disagreement(self, frame, dets, mm_per_px: float, channel=None) -> None:
        if self.capture is not None:
            self.capture.on_analysed(frame, dets, mm_per_px, extra_reasons=("shadow_disagreement",), channel=channel)

    def _shadow_row(self) -> None:
        self._shadow_row_at = self.clock.now() + SHADOW_ROW_S
        if self.record is None or self.shadow is None:
            return
        c = self.shadow.take_interval()
        if not any(c.get(k) for k in ("frames", "skipped_busy", "skipped_sample", "skipped_no_channel")):
            return
        self.record.shadow(
            {
                "time": time.time(),
                "model": self.shadow.model["name"],
                "model_sha256": self.shadow.model["sha256"],
                "live_model": self.model.get("name", ""),
                "frames": c.get("frames", 0),
                "skipped": c.get("skipped_busy", 0) + c.get("skipped_sample", 0) + c.get("skipped_no_channel", 0),
                "scallops": c.get("scallops", 0),
                "verdicts_agree": c.get("verdicts_agree", 0),
                "grasps_compared": c.get("grasps_compared", 0),
                "grasps_agree": c.get("grasps_agree", 0),
                "live_only": c.get("live_only", 0),
                "shadow_only": c.get("shadow_only", 0),
                "shadow_ms_p50": c.get("ms_p50"),
            }
        )

    # ------------------------------------------------------------------ promotion
    def _watch_registry(self) -> None:
        while not self._stop.wait(self.config.models.poll_s):
            try:
                self.poll()
            except Exception as e:  # the line goes on with the model it has
                log.warning("model registry: %s", e)

    def poll(self) -> bool:
        """Load the registry's live model if it changed; the frame loop puts it in at its next
        frame. True when a model now waits for that. Loading happens here, off the frame loop."""
        reg = self.registry
        if reg is None:
            return False
        stamp = reg.stamp()
        if stamp == self._registry_stamp:
            return False
        self._registry_stamp = stamp
        index = reg.index()
        name = index.get("live")
        if not name or name == self.model.get("name"):
            return False
        try:
            e = reg.get(name)
            pipe = Pipeline(str(e.path), self.config.vision)
            pipe.check_frame(*self.backend.camera_model.image_size, self._scale)
            self._check_channel(pipe)
        except Exception as ex:
            self.alarms.raise_(
                "vision.model",
                "warning",
                "vision",
                f"model {name} was made live but cannot be used ({ex}); the line keeps {self.model.get('name')}",
                params={"detail": str(ex)},
            )
            return False
        self.alarms.clear("vision.model")
        why = next((h for h in reversed(index.get("history", [])) if h.get("model") == name), {})
        self._pending = (pipe, {"name": e.name, "sha256": e.sha256}, why)
        return True

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def swap(self, vision: PipelineConfig) -> Pipeline:
        """The waiting model's Pipeline, now live, with the line's current thresholds
        ``vision`` (changed on the panel meanwhile). The caller holds the control lock and puts
        it in between two frames."""
        pipe, model, why = self._pending
        pipe.config = vision
        previous, self.model = self.model, model
        self._pending = None
        self.publisher.event(
            "model",
            why.get("user") or "system",
            {
                "model": model["name"],
                "sha256": model["sha256"],
                "from": previous.get("name", ""),
                "action": why.get("action", ""),
            },
        )
        log.info("model %s live (was %s)", model["name"], previous.get("name"))
        return pipe

    def apply_config(self, vision: PipelineConfig) -> None:
        """New thresholds from the panel: the candidate is judged on its model, not on other
        thresholds, so it gets them too (control lock held)."""
        if self.shadow is not None:
            self.shadow.pipeline.config = replace(vision, threads=1)
            self.shadow.share, self.shadow.cpu_share = vision.shadow_share, vision.shadow_cpu_share

    # ------------------------------------------------------------------ capture
    def set_capture(self, on: bool, user: str) -> dict:
        """Start or stop keeping frames for labelling (the engineer panel's switch)."""
        if not isinstance(on, bool):
            raise ConfigError(f"on={on!r}: expected true or false")
        cap = self.capture
        if on and not cap.active:
            session = cap.start({"user": user})
            self.publisher.event("capture", user, {"on": True, "session": session.name})
        elif not on and cap.active:
            name = cap.status()["session"]
            cap.stop()
            self.publisher.event("capture", user, {"on": False, "session": name, "kept": cap.kept})
        return cap.status()

    def figures(self) -> dict:
        """What the screen shows of the model loop: ``model``, ``shadow``, ``capture``."""
        return {
            "model": dict(self.model),
            "shadow": self.shadow.figures() if self.shadow is not None else {},
            "capture": self.capture.status() if self.capture is not None else {},
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self.shadow is not None:
            self.shadow.stop()  # finishes the frame it holds: the last row counts it
            self._shadow_row()
        if self.capture is not None:
            self.capture.stop()
