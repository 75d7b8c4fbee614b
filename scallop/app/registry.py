"""The model registry: the plant's models side by side, which one is live, and how it got there.

::

    REGISTRY/
        registry.json          live model, and every promotion and rollback (who, when, figures)
        models/NAME.onnx       each model as added (never changed afterwards)
        models/NAME.json       its card: sha256, size, when added, where from, and what the model
                               file says of itself (data, seed, training config, metrics)

``scallop model add|list|promote|rollback`` edit it; the line (``[models] registry``) runs the
live model and swaps to a newly promoted one at a frame boundary, without stopping. Promotion
is gated: the candidate and the live model are scored on the plant's labelled reference set
(``[models] reference_set``) and a candidate whose uro success, no-uro picked, adductor hits
or near-adductor grasps are worse than the live model's beyond the 95 % confidence interval of
the candidate's figure is refused (docs/model-loop.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scallop.errors import ConfigError, DataError, StateError

FORMAT = "scallop-model-registry"
VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Z95 = 1.959964

# The gate's figures: (summary key, count of trials in summary["counts"], better when higher).
GATED = (
    ("uro_success", "with_uro", True),
    # The food-safety figure: a candidate that turns rework into "no uro" lets uros go.
    ("uro_passed", "with_uro", False),
    ("no_uro_picked", "without_uro", False),
    ("adductor_hits", "grasps", False),
    ("near_adductor", "pickable_grasps", False),
)


class PromotionRefused(StateError):
    """The candidate is worse than the live model on the reference set (or cannot be judged)."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a share (well behaved at 0 and 1, unlike the normal one)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    # At 0 and n the bound is exact (0 or 1); rounding must not lift it past a live value of 0.
    return (0.0 if successes == 0 else max(0.0, c - half)), (1.0 if successes == n else min(1.0, c + half))


def gate(live: dict, cand: dict) -> dict:
    """Compare two ``scallop eval`` summaries on the same set: per figure the live value, the
    candidate's with its 95 % interval, and whether the candidate is worse beyond it (the live
    value lies outside the candidate's interval on the good side)."""
    out = {}
    for key, trials, higher in GATED:
        n = cand["counts"][trials]
        p_c, p_l = cand.get(key), live.get(key)
        if n == 0 or p_c is None or p_l is None:
            out[key] = {"live": p_l, "candidate": p_c, "n": n, "interval": None, "worse": False}
            continue
        lo, hi = wilson(round(p_c * n), n)
        worse = hi < p_l if higher else lo > p_l
        out[key] = {"live": p_l, "candidate": p_c, "n": n, "interval": [round(lo, 5), round(hi, 5)], "worse": worse}
    return out


@dataclass
class ModelEntry:
    name: str
    path: Path
    card: dict

    @property
    def sha256(self) -> str:
        return self.card["sha256"]


class Registry:
    def __init__(self, root: str | os.PathLike) -> None:
        if not str(root):
            raise ConfigError("models.registry: no registry folder configured ([models] registry in the line's config)")
        self.root = Path(root)
        self.index_path = self.root / "registry.json"

    # ------------------------------------------------------------------ storage
    @contextlib.contextmanager
    def _locked(self):
        """One change at a time (two engineers promoting at once must not lose one)."""
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def index(self) -> dict:
        if not self.index_path.is_file():
            return {"format": FORMAT, "version": VERSION, "live": None, "history": []}
        try:
            d = json.loads(self.index_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{self.index_path}: not valid JSON ({e})") from None
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise DataError(f"{self.index_path}: not a {FORMAT} version {VERSION} file")
        return d

    def _save(self, d: dict) -> None:
        tmp = self.index_path.with_name("registry.json.tmp")
        tmp.write_text(json.dumps(d, indent=1))
        os.replace(tmp, self.index_path)

    def stamp(self) -> float:
        """Changes when the live model changes (the line polls this)."""
        try:
            return self.index_path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    # ------------------------------------------------------------------ models
    def entries(self) -> list[ModelEntry]:
        out = []
        for card in sorted((self.root / "models").glob("*.json")):
            try:
                c = json.loads(card.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{card}: not valid JSON ({e})") from None
            out.append(ModelEntry(card.stem, card.with_suffix(".onnx"), c))
        return sorted(out, key=lambda e: e.card.get("added", 0))

    def get(self, name: str) -> ModelEntry:
        for e in self.entries():
            if e.name == name:
                return e
        known = ", ".join(e.name for e in self.entries()) or "none yet"
        raise KeyError(f"no model {name!r} in the registry {self.root} (models: {known})")

    def add(self, model: str | os.PathLike, name: str = "", source: str = "") -> ModelEntry:
        """Copy ``model`` in (checked by the runtime first); the name defaults to its file name
        and the first 8 characters of its hash. The same file twice is the same entry."""
        from scallop.models.runtime import SegModel

        src = Path(model)
        info = SegModel(src, threads=1).info  # refuses a file the line could not run
        digest = sha256_of(src)
        for e in self.entries():
            if e.sha256 == digest:
                return e
        name = name or f"{src.stem}-{digest[:8]}"
        if not NAME_RE.match(name):
            raise ConfigError(
                f"name={name!r}: use letters, digits, '.', '_' or '-' (up to 64, not starting with a sign)"
            )
        meta = info.meta

        def parsed(key):
            try:
                return json.loads(meta[key])
            except (KeyError, json.JSONDecodeError):
                return meta.get(key)

        card = {
            "name": name,
            "sha256": digest,
            "bytes": src.stat().st_size,
            "added": time.time(),
            "source": source or src.name,
            "data": parsed("scallop.data"),
            "seed": parsed("scallop.seed"),
            "trained_at": meta.get("scallop.trained_at"),
            "train_config": parsed("scallop.train_config"),
            # The shipped file names its figures scallop.metrics; scallop train writes scallop.app.metrics.
            "metrics": parsed("scallop.app.metrics") or parsed("scallop.metrics"),
        }
        with self._locked():
            dest = self.root / "models" / f"{name}.onnx"
            if dest.exists():
                raise ConfigError(f"name={name!r}: the registry already has a model of that name")
            shutil.copyfile(src, dest.with_suffix(".onnx.part"))
            os.replace(dest.with_suffix(".onnx.part"), dest)
            (self.root / "models" / f"{name}.json").write_text(json.dumps(card, indent=1))
        return ModelEntry(name, dest, card)

    def live_entry(self) -> ModelEntry | None:
        """The live model, its file checked against the checksum it was added with (DataError
        when missing or changed); None before any model is live. Changes nothing."""
        name = self.index()["live"]
        if not name:
            return None
        e = self.get(name)
        if not e.path.is_file() or sha256_of(e.path) != e.sha256:
            raise DataError(f"{e.path}: the live model's file is missing or changed since it was added")
        return e

    def ensure_live(self) -> ModelEntry:
        """The live model; a new registry starts with the shipped model live."""
        e = self.live_entry()
        if e is not None:
            return e
        from scallop.models.runtime import default_model_path

        e = self.add(default_model_path(), name="", source="shipped with the software")
        with self._locked():
            d = self.index()
            if not d["live"]:
                d["live"] = e.name
                d["history"].append({"time": time.time(), "action": "initial", "model": e.name, "user": "system"})
                self._save(d)
        return self.get(self.index()["live"])

    # ------------------------------------------------------------------ promotion
    def promote(self, name: str, reference_set: str, user: str = "", mm_per_px: float | None = None, threads: int = 1):
        """Make ``name`` live if the gate lets it; returns the history entry. Raises
        :class:`PromotionRefused` naming the figures that are worse. One onnxruntime thread by
        default: a promotion is judged on the line PC while the line runs."""
        if not reference_set:
            raise PromotionRefused(
                "models.reference_set: no labelled reference set configured; promotion needs one to compare the "
                "candidate with the live model ([models] reference_set in the line's config)"
            )
        from scallop.app.evaluation import evaluate

        live = self.ensure_live()
        cand = self.get(name)
        if cand.name == live.name:
            raise StateError(f"{name} is already the live model")
        figures = {}
        for who, e in (("live", live), ("candidate", cand)):
            ev = evaluate(e.path, [reference_set], mm_per_px=mm_per_px, threads=threads, keep_worst=0)
            figures[who] = ev.summary
        verdict = gate(figures["live"], figures["candidate"])
        entry = {
            "time": time.time(),
            "action": "promote",
            "model": cand.name,
            "sha256": cand.sha256,
            "from": live.name,
            "user": user,
            "reference_set": str(reference_set),
            "gate": verdict,
        }
        worse = [k for k, v in verdict.items() if v["worse"]]
        with self._locked():
            d = self.index()
            if worse:
                d["history"].append(entry | {"action": "promote_refused"})
                self._save(d)
                shown = "; ".join(
                    f"{k} {verdict[k]['candidate']} against the live {verdict[k]['live']} "
                    f"(95 % interval {verdict[k]['interval'][0]}..{verdict[k]['interval'][1]}, n={verdict[k]['n']})"
                    for k in worse
                )
                raise PromotionRefused(
                    f"{cand.name} is worse than the live model {live.name} on the reference set: {shown}"
                )
            if d["live"] != live.name:
                raise StateError(f"the live model changed to {d['live']} while {cand.name} was being judged: try again")
            d["live"] = cand.name
            d["history"].append(entry)
            self._save(d)
        return entry

    def live_stack(self, d: dict | None = None) -> list[str]:
        """The models that were live, oldest first: a promotion pushes, a rollback pops."""
        stack: list[str] = []
        for h in (d or self.index())["history"]:
            if h["action"] == "initial":
                stack = [h["model"]]
            elif h["action"] == "promote":
                stack.append(h["model"])
            elif h["action"] == "rollback" and stack:
                stack.pop()
        return stack

    def rollback(self, user: str = "") -> dict:
        """Back to the model that was live before the last promotion still in force."""
        with self._locked():
            d = self.index()
            stack = self.live_stack(d)
            if len(stack) < 2:
                raise StateError("nothing to roll back to: no promotion in this registry is still in force")
            previous = stack[-2]
            entry = {
                "time": time.time(),
                "action": "rollback",
                "model": previous,
                "sha256": self.get(previous).sha256,
                "from": d["live"],
                "user": user,
            }
            d["live"] = previous
            d["history"].append(entry)
            self._save(d)
        return entry
