"""A model scored on labelled sets: the loop behind ``scallop eval``, ``scallop bench accuracy
--data`` and the promotion gate of the model registry, around the one frame scorer
(:func:`scallop.vision.evaluate.score_frame`).

A labelled set is a data-set folder (docs/dataset-format.md) or a COCO file (images relative to
it, :mod:`scallop.app.labels`). The figures come per set as a whole, per scale (0.1 mm/px bins)
and per condition where the labels name conditions (an image's ``conditions``; the simulator's
belt colour). The worst frames — most failures, the costliest first — are kept with their
pictures for the HTML report.
"""

from __future__ import annotations

import base64
import heapq
import html
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from scallop.app.outputs import check_output_file
from scallop.errors import DataError
from scallop.models.dataset import Sample

# Failures by cost: a grasp on the adductor tears the meat, a uro left on is a food-safety
# failure; a missed or doubted scallop is a slowdown.
FAILURE_WEIGHT = {
    "grasp_on_adductor": 10,
    "grasp_near_adductor": 5,
    "uro_reported_on_scallop_without_uro": 3,
    "grasp_off_uro": 3,
    "missed_scallop": 2,
    "false_detection": 1,
}


def labelled_samples(source: str | Path, mm_per_px: float | None = None) -> tuple[int, Iterator[Sample]]:
    """(number of images, the samples) of a COCO file or a data-set folder."""
    n, loaders = labelled_loaders(source, mm_per_px)
    return n, (load() for load in loaders)


def labelled_loaders(source: str | Path, mm_per_px: float | None = None) -> tuple[int, list[Callable[[], Sample]]]:
    """(number of images, one function per image that reads and checks its sample) of a COCO
    file or a data-set folder: an image that cannot be read raises a :class:`DataError` naming
    it, and the caller may go on to the next (:func:`evaluate` names every such image)."""
    p = Path(source)
    if p.is_file():
        from scallop.app.labels import CocoSet

        coco = CocoSet(p, mm_per_px)
        return len(coco), [partial(coco.load, im) for im in coco.images]
    if p.is_dir():
        from scallop.models.dataset import load_dataset

        # Every label file checked before the first image: all the bad ones named at once.
        ds = load_dataset(p)
        ds.check_labels()
        ds.check_scale_option(mm_per_px)
        return len(ds), [partial(ds.load, name, mm_per_px) for name in ds.names]
    raise DataError(f"{p}: no such labelled set (a COCO .json file or a data-set folder)")


def carries_channel(source: str | Path, mm_per_px: float | None = None) -> bool:
    """Whether a labelled set has the fluorescence channel for every image: a data-set folder
    whose ``dataset.json`` names "uv", a COCO file with ``x.uv.png`` beside every image. The
    entries (a folder's scales) are read and checked here, before any model is loaded: a
    ``mm_per_px`` that conflicts with the set's own scale is refused now."""
    p = Path(source)
    if p.is_file():
        from scallop.app.labels import CocoSet
        from scallop.imagefiles import companion_of

        return all(companion_of(im.path) is not None for im in CocoSet(p, mm_per_px).images)
    if not p.is_dir():
        return False  # evaluate() says what is wrong with it
    from scallop.models.dataset import load_dataset

    ds = load_dataset(p)
    ds.check_scale_option(mm_per_px)
    return "uv" in (ds.manifest.get("channels") or ())


def conditions_of(labels: dict) -> list[str]:
    out = [str(c) for c in labels.get("conditions") or []]
    look = labels.get("look")
    if isinstance(look, dict) and look.get("belt_colour"):
        out.append(f"belt:{look['belt_colour']}")
    return out


def scale_bin(mm_per_px: float) -> str:
    lo = np.floor(mm_per_px * 10 + 1e-9) / 10
    return f"{lo:.1f}-{lo + 0.1:.1f}"


def measured_scales(meta: dict) -> tuple[float, float] | None:
    """The span of image scales (mm/px) a model's own figures were measured over: the scale
    bins of the validation ``scallop train``, ``scallop eval`` or ``bench accuracy`` wrote into
    its metadata (``scallop.app.metrics``, or ``scallop.metrics`` in older files). None when the
    file carries no such figures."""
    for key in ("scallop.app.metrics", "scallop.metrics"):
        try:
            bins = json.loads(meta[key])["per_scale"]
            spans = [tuple(float(v) for v in b.split("-")) for b, fig in bins.items() if fig.get("frames")]
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if spans and all(len(s) == 2 and np.isfinite(s).all() and s[0] < s[1] for s in spans):
            return min(s[0] for s in spans), max(s[1] for s in spans)
    return None


def scale_outside_measured(meta: dict, mm_per_px: float) -> tuple[float, float] | None:
    """The span of :func:`measured_scales` when ``mm_per_px`` lies outside it (None when inside,
    or when the model carries no figures): the line's warning and the doctor's, one test."""
    span = measured_scales(meta)
    if span is None or span[0] - 1e-9 <= mm_per_px <= span[1] + 1e-9:
        return None
    return span


@dataclass
class Evaluation:
    summary: dict
    worst: list = field(default_factory=list)  # (cost, frame, [failures], jpeg bytes)
    failures: list = field(default_factory=list)
    model: str = ""


def evaluate(
    model,
    sources: list,
    mm_per_px: float | None = None,
    threads: int = 2,
    keep_worst: int = 12,
    progress: Callable[[int, int], None] | None = None,
    config=None,
    scale_error: float = 1.0,
    unseen_share: float = 0.0,
) -> Evaluation:
    """Score ``model`` (a path, None for the shipped model, or a ready Pipeline) on every image
    of ``sources``. ``config``: the pipeline's thresholds (the line's [vision] table).
    ``scale_error``: the model is told each image's scale times this (a drifted calibration);
    the scoring keeps the true scale. ``unseen_share``: the share of each frame's width, from
    its left edge, that the fluorescence camera is taken not to see: the channel is 0 there, as
    the line registers it, and the detector is told (``detect(uv_seen=)``)."""
    from scallop.vision.evaluate import Tally, score_frame
    from scallop.vision.pipeline import Pipeline, PipelineConfig

    if isinstance(model, Pipeline):
        pipe = model
    else:
        cfg = config or PipelineConfig(threads=threads)
        pipe = Pipeline(str(model) if model else None, cfg)
    # A source is a path, or (name, count, loaders) already opened (the held-out part of a set,
    # :func:`labelled_loaders` of it: every unreadable image of it is named too).
    opened = [
        (Path(s[0]), s[1], s[2]) if isinstance(s, tuple) else (Path(s), *labelled_loaders(s, mm_per_px))
        for s in sources
    ]
    total_n = sum(n for _, n, _ in opened)
    total, by_scale, by_condition, by_gonad = Tally(), {}, {}, {}
    worst: list = []
    unreadable: list[str] = []
    done = 0
    for src, _, loaders in opened:
        for load in loaders:
            try:
                s = load()
            except DataError as e:
                # Figures without this image would pass for the set's: none are given. The
                # remaining images are only read, so that one run names every unreadable one.
                unreadable.append(str(e))
            if unreadable:
                done += 1
                if progress:
                    progress(done, total_n)
                continue
            uv, seen = s.uv, None
            if unseen_share > 0 and uv is not None:
                seen = np.ones(uv.shape, bool)
                seen[:, : int(round(unseen_share * uv.shape[1]))] = False
                uv = np.where(seen, uv, 0).astype(np.uint8)
            dets = pipe.detect(
                s.image, mm_per_px=s.mm_per_px * scale_error, outlines=keep_worst > 0, uv=uv, uv_seen=seen
            )
            frame = f"{src.name}/{s.name}"
            t = score_frame(dets, s.parts, s.instances, s.scallops, s.mm_per_px, frame=frame)
            total.add(t)
            by_scale.setdefault(scale_bin(s.mm_per_px), Tally()).add(t)
            for c in conditions_of(s.labels):
                by_condition.setdefault(c, Tally()).add(t)
            for sex in GONADS:
                # The same detections scored on this gonad's scallops only: a male's pale gonad
                # beside a pale belt is where colour is weakest.
                mine = [f for f in s.scallops if f.get("gonad") == sex]
                if mine:
                    by_gonad.setdefault(sex, Tally()).add(score_frame(dets, s.parts, s.instances, mine, s.mm_per_px))
            cost = sum(FAILURE_WEIGHT.get(what, 1) for _, _, what in t.failures)
            if keep_worst > 0 and cost > 0 and (len(worst) < keep_worst or cost > worst[0][0]):
                item = (cost, done, frame, [what for _, _, what in t.failures], _picture(s, dets))
                (heapq.heappush if len(worst) < keep_worst else heapq.heapreplace)(worst, item)
            done += 1
            if progress:
                progress(done, total_n)
    if unreadable:
        more = f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        raise DataError(
            f"{len(unreadable)} of {total_n} images cannot be scored, so no figures are given (they would not "
            f"be the whole set's): " + "; ".join(unreadable[:5]) + more + ". Copy them again, or remove each "
            "image from the set with its parts/, instances/ and labels/ files"
        )
    summary = total.summary()
    summary["per_scale"] = {k: _short(v.summary()) for k, v in sorted(by_scale.items())}
    if by_condition:
        summary["per_condition"] = {k: _short(v.summary()) for k, v in sorted(by_condition.items())}
    if by_gonad:
        summary["per_gonad"] = {k: _per_scallop(v) for k, v in sorted(by_gonad.items())}
    ranked = [(c, f, w, j) for c, _, f, w, j in sorted(worst, key=lambda x: (-x[0], x[1]))]
    return Evaluation(summary, ranked, total.failures, pipe.model.info.path)


# Gonad kinds in the simulator's per-scallop facts (``gonad``).
GONADS = ("female", "male")


def _per_scallop(t) -> dict:
    """The per-scallop figures and their counts (grasp checks over the whole frame are not
    split by scallop, so they are left out)."""
    s = t.summary()
    return {k: s[k] for k in ("scallops", "recall", "uro_success", "no_uro_picked")} | {
        "found": t.found,
        "with_uro": t.with_uro,
        "grasp_on_uro": t.grasp_on_uro,
        "without_uro": t.without_uro,
        "no_uro_grasped": t.no_uro_grasped,
    }


# The figures of a per-scale or per-condition row (the report's table shows them too).
SHORT = (
    "frames",
    "scallops",
    "recall",
    "precision",
    "uro_success",
    "uro_passed",
    "adductor_hits",
    "near_adductor",
    "no_uro_picked",
)


def _short(s: dict) -> dict:
    return {k: s[k] for k in (*SHORT, "jaw_margin_min_mm")}


def _picture(s: Sample, dets) -> bytes:
    """The frame with the model's outlines (scallops, uros, adductors) and the labels' uro and
    adductor edges, for the report."""
    from scallop.vision.annotate import draw

    img = draw(s.image, dets)
    for label, colour in ((4, (255, 0, 255)), (3, (255, 255, 255))):
        m = (s.parts == label).astype(np.uint8)
        edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        img[edge] = colour
    for i, parts in enumerate(dets.part_contours or []):
        for name, colour in (("uro", (0, 0, 255)), ("adductor", (255, 200, 0))):
            cs = [np.round(c).astype(np.int32) for c in parts.get(name, [])]
            if cs and i < len(dets):
                cv2.polylines(img, cs, True, colour, 1, cv2.LINE_AA)
    scale = min(1.0, 960 / img.shape[1])
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


# ---------------------------------------------------------------------------- the HTML report

HEADLINE = (
    ("recall", "scallop recall"),
    ("precision", "precision"),
    ("uro_success", "uro success (grasp in the uro grown by 1 mm)"),
    ("adductor_hits", "adductor hits (grasp inside)"),
    ("near_adductor", "near the adductor (2 mm jaws reach it)"),
    ("no_uro_picked", "no-uro scallops grasped"),
    ("uro_passed", "uros the line would let go (not found, reported absent, or picked off)"),
    ("no_uro_to_rework", "no-uro scallops sent to rework"),
    ("jaw_margin_min_mm", "jaw margin to the adductor, minimum (mm)"),
    ("jaw_margin_p1_mm", "jaw margin to the adductor, 1st percentile (mm)"),
)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: dict) -> str:
    cols = SHORT
    head = "".join(f"<th>{c}</th>" for c in ("", *cols))
    body = "".join(
        f"<tr><th>{html.escape(k)}</th>" + "".join(f"<td>{_fmt(v.get(c))}</td>" for c in cols) + "</tr>"
        for k, v in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def check_report_path(path: Path) -> None:
    """Refuse a report file that could not be written, before the (slow) scoring."""
    check_output_file(path, "the report", "report.html")


def write_report(ev: Evaluation, path: Path, title: str) -> None:
    s = ev.summary
    figures = "".join(f"<tr><th>{label}</th><td>{_fmt(s.get(k))}</td></tr>" for k, label in HEADLINE)
    counts = html.escape(json.dumps(s["counts"]))
    frames = "".join(
        f"<figure><img src='data:image/jpeg;base64,{base64.b64encode(jpg).decode()}' alt='{html.escape(frame)}'>"
        f"<figcaption><b>{html.escape(frame)}</b> (cost {cost}): {html.escape(', '.join(sorted(set(what))))}"
        "</figcaption></figure>"
        for cost, frame, what, jpg in ev.worst
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:1.5em;max-width:1000px}table{border-collapse:collapse;margin:.5em 0}",
        "td,th{border:1px solid #bbb;padding:.2em .5em;text-align:right}th{text-align:left}",
        "figure{margin:1em 0}img{max-width:100%;border:1px solid #888}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>model {html.escape(ev.model)}; {s['frames']} frames, {s['scallops']} scallops counted "
        "(at least 90 % visible, not occluded, not cut by the border).</p>",
        f"<table>{figures}</table><p><small>counts: {counts}</small></p>",
        "<h2>Per scale (mm/px)</h2>",
        _table(s["per_scale"]),
    ]
    if s.get("per_condition"):
        parts += ["<h2>Per condition</h2>", _table(s["per_condition"])]
    parts += [
        "<h2>Worst frames</h2>",
        "<p>Model: green outline pickable, amber not, red cross the grasp, red/orange thin lines its uro and "
        "adductor. Labels: magenta the uro's edge, white the adductor's.</p>",
        frames or "<p>No frame has a failure.</p>",
        "</body></html>",
    ]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(parts), encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot write the report: {e.strerror or e}") from None
