"""``scallop labels export|import``: captured frames to a labelling tool and back."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "labels",
        help="export captured frames as COCO for a labelling tool, import the labels back",
        description=(
            "Captured frames ⇄ labelling tools (CVAT, Label Studio, Roboflow) in COCO 1.0 JSON\n"
            "with polygons; see docs/dataset-format.md.\n\n"
            "examples:\n"
            "  scallop labels export scallop-record/captures/capture-20260301-101500 --out to-label/coco.json\n"
            "  scallop labels import labelled/coco.json --out data/line3"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = p.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    e = s.add_parser(
        "export",
        help="a capture session as COCO, the model's masks as pre-annotations",
        description=(
            "Write a COCO file for a capture session: one image per kept frame (with its scale,\n"
            "frame index, encoder count and why it was kept), and the model's scallop, uro and\n"
            "adductor outlines as annotations the labeller corrects. Each scallop carries the\n"
            "model's verdict and, when the line knew it, the pick's outcome as attributes.\n"
            "A frame kept with its fluorescence frame (x.uv.png beside it) is annotated by the\n"
            "shipped model that reads the channel; import brings the companions into the data set.\n"
            "An --out that cannot be written (a folder in its place, a file where its folder\n"
            "should be, a read-only place) is refused before any frame is analysed: exit 3."
        ),
    )
    e.add_argument("capture", metavar="CAPTURE", help="a capture session folder (capture-*)")
    e.add_argument("--out", required=True, help="the COCO .json to write (image paths are relative to it)")
    e.add_argument(
        "--model", help="model for the pre-annotations (default: the shipped model, the four-channel one for pairs)"
    )
    e.set_defaults(func=run_export)
    i = s.add_parser(
        "import",
        help="a labelled COCO file into a data-set folder",
        description=(
            "Read a COCO file (polygons or RLE; categories scallop, uro, adductor and optionally\n"
            "gonad, mantle, gill) into the data-set format. Every annotation is checked first; an\n"
            "error names the image and the annotation id. A part belongs to the scallop whose\n"
            "mask holds it. The scale comes from each image's mm_per_px; --mm-per-px gives it to the\n"
            "images without one, and is refused (exit 2) where it is more than 1 % off an image's own.\n"
            "Fluorescence frames (x.uv.png beside the images) come along when every image has one\n"
            "(a version-2 set); a file where only some do is refused unless --colour-only."
        ),
    )
    i.add_argument("coco", metavar="COCO", help="the labelled COCO .json (images relative to it)")
    i.add_argument("--out", required=True, help="data-set folder to write")
    i.add_argument(
        "--mm-per-px",
        type=float,
        help="the scale of images whose labelling tool dropped mm_per_px (never replaces an image's own)",
    )
    i.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a data set already in --out (any other non-empty folder is refused; docs/dataset-format.md)",
    )
    i.add_argument(
        "--colour-only",
        action="store_true",
        help="leave the fluorescence frames (x.uv.png beside the images) out: a colour-only set",
    )
    i.set_defaults(func=run_import)


def run_export(args) -> int:
    from scallop.app.capture import outcomes_by_detection, read_capture
    from scallop.app.labels import CocoWriter
    from scallop.app.outputs import check_output_file
    from scallop.app.progress import Progress
    from scallop.errors import DataError
    from scallop.imagefiles import broken_companion, companion_of
    from scallop.models.runtime import default_uv_model_path
    from scallop.vision.camera import read_fluorescence, read_image
    from scallop.vision.pipeline import Pipeline

    session, frames, outcomes = read_capture(args.capture)
    out = Path(args.out)
    check_output_file(out, "the COCO file", "coco.json")  # before every frame is run through the model
    pipes: dict = {}

    def pipeline(kind: str) -> Pipeline:
        # Without --model, as in scallop detect: a frame kept with its fluorescence frame gets
        # the shipped model that reads it, one kept without (its pair was dropped) the colour one.
        if kind not in pipes:
            pipes[kind] = Pipeline(
                args.model if kind == "given" else (str(default_uv_model_path()) if kind == "uv" else None)
            )
        return pipes[kind]

    writer = CocoWriter(f"scallop capture {Path(args.capture).name}")
    n_ann = 0
    with Progress(len(frames), "exporting", unit="frames") as bar:
        for img_path, meta in frames:
            image = read_image(img_path)
            companion = companion_of(img_path)
            broken = broken_companion(img_path)
            if broken is not None:
                # A pair the capture wrote, now broken: exported as colour it would lose its mark.
                raise DataError(
                    f"{broken}: the fluorescence frame of {img_path} is not an image file (a folder, or a broken "
                    "link): restore it, or remove it to export the frame as colour only"
                )
            pipe = pipeline("given" if args.model else "uv" if companion is not None else "colour")
            if companion is None and pipe.takes_uv:
                raise DataError(
                    f"{img_path}: the model reads the fluorescence channel and this frame was captured without "
                    "one: export with a colour-only model (--model)"
                )
            uv = read_fluorescence(companion, image.shape[:2]) if companion is not None and pipe.takes_uv else None
            dets = pipe.detect(image, mm_per_px=meta["mm_per_px"], outlines=True, uv=uv)
            iid = writer.add_image(
                os.path.relpath(img_path, out.parent),
                image.shape[1],
                image.shape[0],
                meta["mm_per_px"],
                scallop={k: meta.get(k) for k in ("frame_index", "encoder", "timestamp", "time", "why", "model")}
                | {"fluorescence": companion is not None},
            )
            before = len(writer.annotations)
            writer.add_detections(iid, dets, _by_position(dets, meta, outcomes_by_detection(meta, outcomes)))
            n_ann += len(writer.annotations) - before
            bar.update()
    try:
        writer.write(out)
    except OSError as e:  # checked before the frames, but a disk can fill meanwhile
        raise DataError(f"{out}: cannot write the COCO file: {e.strerror or e}") from None
    models = sorted({p.model.info.path for p in pipes.values()})
    print(json.dumps({"images": len(frames), "annotations": n_ann, "model": ", ".join(models), "out": str(out)}))
    return 0


def _by_position(dets, meta: dict, found: list) -> list:
    """The outcomes known for the line's detections, given to the export's detections at the same
    place (the export may run another model than the line did)."""
    import numpy as np

    centres = [d["center_px"] for d in meta.get("detections", [])]
    out = []
    for c in dets.center_px:
        if not centres:
            out.append(None)
            continue
        dist = np.linalg.norm(np.asarray(centres) - c, axis=1)
        j = int(dist.argmin())
        out.append(found[j] if dist[j] * meta["mm_per_px"] <= 10.0 else None)
    return out


def run_import(args) -> int:
    from scallop.app.labels import import_coco
    from scallop.app.progress import Progress
    from scallop.errors import check_number

    if args.mm_per_px is not None:  # a usage error, as in eval and detect
        check_number("--mm-per-px", args.mm_per_px, 0.05, 5.0)

    with Progress(None, "importing", unit="images") as bar:
        summary = import_coco(
            args.coco,
            args.out,
            mm_per_px=args.mm_per_px,
            overwrite=args.overwrite,
            progress=lambda i, n: (bar.set_total(n), bar.advance_to(i)),
            colour_only=args.colour_only,
        )
    print(json.dumps(summary))
    return 0
