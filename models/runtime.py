"""Run the shipped segmentation model with onnxruntime alone.

Everything the runtime needs to feed the model — class names, the scale each input is
expected at, crop size, channel order, normalisation, the channels each stage takes — is read
from the model's own ``metadata_props``, never from constants here. A model whose metadata is
missing or unusable is refused with :class:`ModelError` saying what is wrong.

Format version 1 is colour only: each stage takes the three colour planes. Version 2 adds the
fluorescence channel (docs/fluorescence.md): each stage names its channels (``"channels":
["bgr"]`` or ``["bgr", "uv"]``) and ``scallop.normalize`` gives one mean and std per plane, the
colour ones then the fluorescence one. A colour-only model is still written as version 1, so
older runtimes keep reading it; they refuse a version 2 model by its version, rather than
feeding three planes to a graph that wants four.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from scallop.errors import DataError

FORMAT = "scallop-seg"
SUPPORTED_VERSIONS = (1, 2)
#: The channels a stage may take, in input order: the colour image's three planes always first.
CHANNELS = ("bgr", "uv")
#: Input planes per channel.
PLANES = {"bgr": 3, "uv": 1}
_log = logging.getLogger(__name__)
DEFAULT_MODEL_NAME = "scallop-seg.onnx"
# The shipped model whose parts stage also takes the fluorescence channel (docs/fluorescence.md):
# chosen by ``scallop detect`` for a frame that has its fluorescence frame beside it.
DEFAULT_UV_MODEL_NAME = "scallop-seg-uv.onnx"
REQUIRED_FINDER = ("background", "core", "edge")
REQUIRED_PARTS = ("background", "meat", "adductor", "uro")


class ModelError(DataError):
    """The model file cannot be used (missing, corrupt, or metadata this runtime cannot use)."""


class MissingChannelError(ModelError):
    """The model takes the fluorescence channel and the caller gave no fluorescence image."""


@dataclass(frozen=True)
class StageSpec:
    """How to feed one stage: input name, classes, scale (mm per pixel), normalisation."""

    input: str
    output: str
    classes: tuple[str, ...]
    mm_per_px: float
    multiple: int  # spatial size must be a multiple of this (finder)
    size: int  # square crop side in pixels (parts); 0 = any (finder)
    channels: tuple[str, ...] = ("bgr",)  # what it is fed, in input order (CHANNELS)

    @property
    def planes(self) -> int:
        """Input planes: 3 for colour, 4 with the fluorescence channel."""
        return sum(PLANES[c] for c in self.channels)

    @property
    def takes_uv(self) -> bool:
        return "uv" in self.channels


@dataclass(frozen=True)
class ModelInfo:
    path: str
    version: int
    channel_order: str  # "BGR" or "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    finder: StageSpec
    parts: StageSpec
    meta: dict
    # The fluorescence plane's normalisation (x in 0..255 → (x / 255 − mean) / std); None when
    # no stage takes the channel.
    uv_mean: float | None = None
    uv_std: float | None = None

    @property
    def takes_uv(self) -> bool:
        """A stage of the model needs the fluorescence image beside the colour frame."""
        return self.finder.takes_uv or self.parts.takes_uv


def default_model_path() -> Path:
    return Path(str(resources.files("scallop.models").joinpath(DEFAULT_MODEL_NAME)))


def default_uv_model_path() -> Path:
    """The shipped four-channel model (colour and fluorescence)."""
    return Path(str(resources.files("scallop.models").joinpath(DEFAULT_UV_MODEL_NAME)))


def _need(meta: dict, key: str, path: str):
    if key not in meta:
        raise ModelError(f"{path}: model metadata lacks '{key}' (not a scallop segmentation model, or too old)")
    return meta[key]


def _json(meta: dict, key: str, path: str):
    raw = _need(meta, key, path)
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ModelError(f"{path}: model metadata '{key}' is not valid JSON: {raw[:60]!r}") from None


def _first_line(e: BaseException) -> str:
    """An untyped library error in one line (onnx and onnxruntime write several)."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """A model file's metadata, read without starting a session (cheap: for checks before a
    line starts); :class:`ModelError` for a file that is not a model this runtime reads."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: {_not_a_model_file(p)}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # onnx raises protobuf's own errors for a file that is not a model
        raise ModelError(f"{p}: not a loadable ONNX model ({_first_line(e)})") from None
    return parse_metadata({m.key: m.value for m in proto.metadata_props}, str(p))


def parse_metadata(meta: dict, path: str) -> ModelInfo:
    fmt = _need(meta, "scallop.format", path)
    if fmt != FORMAT:
        raise ModelError(f"{path}: model format is {fmt!r}, this runtime reads {FORMAT!r}")
    try:
        version = int(_need(meta, "scallop.version", path))
    except ValueError:
        raise ModelError(f"{path}: model metadata 'scallop.version' is not an integer") from None
    if version not in SUPPORTED_VERSIONS:
        raise ModelError(
            f"{path}: model format version {version} is not supported (this runtime reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}); update the software or use a matching model"
        )
    norm = _json(meta, "scallop.normalize", path)
    order = _need(meta, "scallop.channel_order", path)
    if order not in ("BGR", "RGB"):
        raise ModelError(f"{path}: channel_order {order!r} must be BGR or RGB")

    def channels_of(key: str, d: dict) -> tuple[str, ...]:
        ch = d.get("channels")
        if version == 1:
            if ch is not None:
                raise ModelError(f"{path}: '{key}' names channels {ch!r}, which need model format version 2")
            return ("bgr",)
        # Version 2 says what each stage takes: a missing list is refused, not taken for colour.
        if ch is None:
            raise ModelError(f'{path}: \'{key}\' lacks "channels" (format version 2 names them, e.g. ["bgr", "uv"])')
        if not isinstance(ch, list) or tuple(ch) not in (CHANNELS[:1], CHANNELS):
            raise ModelError(f"{path}: '{key}' channels {ch!r} must be {list(CHANNELS[:1])!r} or {list(CHANNELS)!r}")
        return tuple(ch)

    def stage(key: str, required: tuple[str, ...]) -> StageSpec:
        d = _json(meta, key, path)
        try:
            spec = StageSpec(
                input=str(d["input"]),
                output=str(d["output"]),
                classes=tuple(d["classes"]),
                mm_per_px=float(d["mm_per_px"]),
                multiple=int(d.get("multiple", 1)),
                size=int(d.get("size", 0)),
                channels=channels_of(key, d),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"{path}: '{key}' lacks a usable field ({e})") from None
        if tuple(spec.classes[: len(required)]) != required:
            raise ModelError(f"{path}: '{key}' classes {list(spec.classes)} must start with {list(required)}")
        if not (0.05 <= spec.mm_per_px <= 10):
            raise ModelError(f"{path}: '{key}' mm_per_px={spec.mm_per_px} is out of range 0.05..10")
        return spec

    finder = stage("scallop.finder", REQUIRED_FINDER)
    parts = stage("scallop.parts", REQUIRED_PARTS)
    if parts.size <= 0:
        raise ModelError(f"{path}: 'scallop.parts' must give the crop size")
    # One mean and std per input plane: the colour ones (in channel_order), then the
    # fluorescence one when a stage takes it.
    n = 4 if finder.takes_uv or parts.takes_uv else 3
    try:
        mean = tuple(float(v) for v in norm["mean"])
        std = tuple(float(v) for v in norm["std"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{path}: 'scallop.normalize' must hold mean and std lists of {n} numbers") from None
    if len(mean) != n or len(std) != n or min(std) <= 0:
        what = "3 colour planes" if n == 3 else "3 colour planes and the fluorescence plane"
        raise ModelError(f"{path}: 'scallop.normalize' must hold {n} means and {n} positive stds (its {what})")
    return ModelInfo(
        path=path,
        version=version,
        channel_order=order,
        mean=mean[:3],
        std=std[:3],
        finder=finder,
        parts=parts,
        meta=dict(meta),
        uv_mean=mean[3] if n == 4 else None,
        uv_std=std[3] if n == 4 else None,
    )


def _not_a_model_file(p: Path) -> str:
    """Why ``p`` is no model file, in words: a folder is called one (give the .onnx file in it)."""
    if p.is_dir():
        return "a folder, not a model file: give the .onnx file"
    return "no such model file"


class SegModel:
    """The two-stage segmentation model in one ONNX file.

    ``threads``: onnxruntime intra-op threads (set explicitly: the default grabs every core,
    which starves the capture and Modbus threads of the line).
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 2, rewrite: bool = True):
        import onnxruntime as ort

        p = Path(path) if path is not None else default_model_path()
        if not p.is_file():
            raise ModelError(f"{p}: {_not_a_model_file(p)}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The pool's threads spin between the operators of a run (the stages hand work to
        # each other in microseconds), but not after it: left to spin, they kept the second
        # core busy through the whole post-processing and the next frame's resize, two cores
        # for one frame's work at the same speed (bench vision reports the CPU time).
        so.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self.session = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
            raise ModelError(f"{p}: not a loadable ONNX model ({_first_line(e)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = parse_metadata(meta, str(p))
        names = {i.name for i in self.session.get_inputs()}
        outs = {o.name for o in self.session.get_outputs()}
        for st in (self.info.finder, self.info.parts):
            if st.input not in names or st.output not in outs:
                raise ModelError(f"{p}: graph has no input {st.input!r} / output {st.output!r} named in its metadata")
        self._check_shapes(str(p))
        # Per-channel affine folded once: x_norm = x * scale + offset (x in 0..255).
        mean = np.array(self.info.mean, np.float32)
        std = np.array(self.info.std, np.float32)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)
        if self.info.channel_order == "RGB":
            self._scale = self._scale[::-1].copy()
            self._offset = self._offset[::-1].copy()
        if self.info.uv_std is not None:
            self._uv_scale = np.float32(1.0 / (255.0 * self.info.uv_std))
            self._uv_offset = np.float32(-self.info.uv_mean / self.info.uv_std)
        ps = self.info.parts.size
        self._empty_crops = np.zeros((0, self.info.parts.planes, ps, ps), np.float32)
        m = max(self.info.finder.multiple, 16)
        # The finder's input as declared: a graph exported for one frame size takes no other,
        # not even for the empty batch fed while the parts stage runs.
        self._finder_shape = next(i.shape for i in self.session.get_inputs() if i.name == self.info.finder.input)
        self._finder_fixed = [d if isinstance(d, int) and d > 0 else None for d in self._finder_shape[2:]]
        eh, ew = (d or m for d in self._finder_fixed)
        self._empty_frame = np.zeros((0, self.info.finder.planes, eh, ew), np.float32)
        # The graph rewritten for onnxruntime's CPU kernels (models/cpugraph.py), used only when
        # it gives the file's own outputs on a test input; ``rewrite=False`` (bench vision
        # --plain-graph) runs the file as it is, to measure the difference.
        self._upsampled: frozenset[str] = frozenset()
        self.graph = "as in the file"
        if rewrite:
            self._use_rewritten(p, so, ort)

    def _use_rewritten(self, p: Path, so, ort) -> None:
        from scallop.models import cpugraph

        try:
            done = cpugraph.rewrite(p.read_bytes())
        except cpugraph.NotRewritable as e:
            self.graph = f"as in the file (not rewritten: {e})"
            _log.info("%s: running the graph as it is: %s", p, e)
            return
        try:
            fast = ort.InferenceSession(done.model, so, providers=["CPUExecutionProvider"])
            # One input through both graphs: any difference beyond float32 rounding means the
            # rewrite does not hold for this file, which then runs as it is.
            rng = np.random.default_rng(0)
            fi, pa = self.info.finder, self.info.parts
            m = max(fi.multiple, 16)
            h, w = self._finder_fixed[0] or 4 * m, self._finder_fixed[1] or 6 * m
            feeds = (
                ({fi.input: rng.random((1, fi.planes, h, w), np.float32), pa.input: self._empty_crops}, fi),
                ({fi.input: self._empty_frame, pa.input: rng.random((2, pa.planes, pa.size, pa.size), np.float32)}, pa),
            )
            for feed, st in feeds:
                want = self.session.run([st.output], feed)[0]
                got = fast.run([st.output], feed)[0]
                if st.output in done.upsampled:
                    got = cpugraph.upsample2x(got)
                if got.shape != want.shape or not float(np.abs(got - want).max()) <= 1e-3:
                    raise ValueError(f"output {st.output!r} differs from the file's")
        except Exception as e:  # any failure leaves the file's own graph, which is correct
            why = _first_line(e)
            self.graph = f"as in the file (its rewrite failed the check: {why})"
            _log.warning("%s: running the graph as it is (its CPU rewrite is not used: %s)", p, why)
            return
        self.session, self._upsampled = fast, done.upsampled
        padding = (
            f"{done.padded_convs} convolutions padded to multiples of {cpugraph.BLOCK} channels "
            f"({done.widened_convs} more reading padded inputs)"
            if done.padded_convs
            else f"no convolution needed padding to {cpugraph.BLOCK} channels"
        )
        self.graph = f"rewritten for the CPU: {padding}, {len(done.upsampled)} outputs upsampled outside the graph"

    @property
    def channels(self) -> int:
        """Input planes of the widest stage: 3 (colour only) or 4 (colour and fluorescence)."""
        return max(self.info.finder.planes, self.info.parts.planes)

    @property
    def takes_uv(self) -> bool:
        """A stage of this model needs the fluorescence image (``uv``) beside the colour frame."""
        return self.info.takes_uv

    def missing_uv(self, what: str = "") -> MissingChannelError:
        """The error for a call without the fluorescence image this model needs."""
        stages = " and ".join(n for n, st in (("finder", self.info.finder), ("parts", self.info.parts)) if st.takes_uv)
        return MissingChannelError(
            f"{self.info.path}: this model's {stages} stage takes 4 channels, the colour image and its "
            f"fluorescence image, but {what or 'no fluorescence image was given'}: give the registered "
            "fluorescence frame (x.uv.png beside x.png or x.jpg) or use a colour-only model"
        )

    def _check_shapes(self, where: str) -> None:
        """The graph's declared input and output shapes against what the metadata says the
        runtime will feed it: (N, 3, H, W) images (4 planes for a stage that takes the
        fluorescence channel), crops of ``parts.size``, one logit plane per class. A dimension the graph leaves free (a name, not a number) fits anything."""
        ins = {i.name: i.shape for i in self.session.get_inputs()}
        outs = {o.name: o.shape for o in self.session.get_outputs()}

        def fixed(d) -> int | None:
            return d if isinstance(d, int) and d > 0 else None

        for st, crop in ((self.info.finder, None), (self.info.parts, self.info.parts.size)):
            want = ["N", st.planes, crop or "H", crop or "W"]
            shown = "x".join(map(str, want))
            got = ins[st.input]
            if len(got) != 4:
                raise ModelError(f"{where}: input {st.input!r} has shape {got}, this runtime feeds {shown} images")
            for d, w in zip(got[1:], want[1:]):
                if fixed(d) is not None and isinstance(w, int) and d != w:
                    raise ModelError(
                        f"{where}: input {st.input!r} has shape {got}, but its metadata says the runtime feeds it {shown}"
                    )
            o = outs[st.output]
            if len(o) != 4 or (fixed(o[1]) is not None and o[1] != len(st.classes)):
                raise ModelError(
                    f"{where}: output {st.output!r} has shape {o}, expected N x {len(st.classes)} classes x H x W"
                )

    def check_frame(self, size_hw: tuple[int, int]) -> None:
        """Refuse a finder input of ``size_hw`` (H, W) the graph cannot take (it fixes another size)."""
        shape = self._finder_shape  # read once at load: this runs for every frame
        for d, n, what in zip(self._finder_fixed, size_hw, ("height", "width")):
            if d is not None and d != n:
                raise ModelError(
                    f"{self.info.path}: the model's {self.info.finder.input!r} input is fixed at {shape[2]}x{shape[3]} "
                    f"(HxW) but frames at this scale give {size_hw[0]}x{size_hw[1]}: its {what} does not fit; "
                    "use a model exported with free image dimensions"
                )

    def to_input(self, bgr: np.ndarray, uv: np.ndarray | None = None) -> np.ndarray:
        """(…, H, W, 3) uint8 BGR → (…, 3, H, W) float32, normalised, in the model's channel order.
        With ``uv`` ((…, H, W) uint8, the fluorescence image on the same pixels) a fourth plane
        follows the colour ones: (…, 4, H, W)."""
        bgr = np.asarray(bgr)
        lead, (h, w) = bgr.shape[:-3], bgr.shape[-3:-1]
        flat = bgr.reshape((-1, h, w, 3))
        if uv is not None:
            uv = np.asarray(uv)
            if uv.shape != bgr.shape[:-1] or uv.dtype != np.uint8:
                raise ValueError(f"fluorescence input {uv.shape} {uv.dtype} does not match the colour {bgr.shape}")
            if self.info.uv_std is None:
                raise ModelError(f"{self.info.path}: this model takes no fluorescence channel")
        nc = 3 if uv is None else 4
        x = np.empty((len(flat), nc, h, w), np.float32)
        # One pass per channel straight into the planar layout: the same float32 products and
        # sums as ``bgr * scale + offset`` but without the interleaved float copy and transpose.
        for c in range(3):
            src = 2 - c if self.info.channel_order == "RGB" else c
            plane = x[:, c]
            np.multiply(flat[..., src], self._scale[src], out=plane, dtype=np.float32)
            plane += self._offset[src]
        if uv is not None:
            plane = x[:, 3]
            np.multiply(uv.reshape((-1, h, w)), self._uv_scale, out=plane, dtype=np.float32)
            plane += self._uv_offset
        return x.reshape(lead + (nc, h, w))

    def run_finder(self, bgr: np.ndarray, uv: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 at the finder's scale, H and W multiples of ``finder.multiple``
        → logits (C, H, W). ``uv`` ((H, W) uint8, on the same pixels) is fed when the finder
        takes the fluorescence channel (required then) and ignored otherwise."""
        st = self.info.finder
        if st.takes_uv and uv is None:
            raise self.missing_uv()
        x = self.to_input(bgr, uv if st.takes_uv else None)[None]
        out = self.session.run([st.output], {st.input: x, self.info.parts.input: self._empty_crops})[0]
        return self._full_size(st.output, out)[0]

    def run_parts(self, crops_bgr: np.ndarray, crops_uv: np.ndarray | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8 crops at the parts scale → logits (N, C, S, S). ``crops_uv``
        ((N, S, S) uint8, the fluorescence image cut the same way) is fed when the parts stage
        takes the channel (required then) and ignored otherwise."""
        st = self.info.parts
        if st.takes_uv and crops_uv is None:
            raise self.missing_uv()
        if len(crops_bgr) == 0:
            return np.zeros((0, len(st.classes), st.size, st.size), np.float32)
        x = self.to_input(crops_bgr, crops_uv if st.takes_uv else None)
        out = self.session.run([st.output], {st.input: x, self.info.finder.input: self._empty_frame})[0]
        return self._full_size(st.output, out)

    def _full_size(self, name: str, out: np.ndarray) -> np.ndarray:
        if name in self._upsampled:
            from scallop.models.cpugraph import upsample2x

            return upsample2x(out)
        return out
