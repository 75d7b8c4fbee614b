"""The model's graph rewritten for onnxruntime's CPU kernels, computing the same numbers.

onnxruntime runs convolutions fastest in its blocked channel layout (NCHWc: 16 channels to a
block on AVX-512, 8 on AVX2). Profiled with onnxruntime's own profiler on the shipped models
(models/README.md, "Speed"), the graph spent 45 % of its time in convolutions and the rest
outside them:
- a Concat of a tensor whose channel count is not a multiple of the block (12 and 24 in these
  networks) is done in the plain layout, so both inputs are copied out of the blocked layout and
  the result back in (`ReorderOutput`, `ReorderInput`: 27 % of the time);
- the last ×2 bilinear upsample of each output's 3 or 4 logit planes runs on a whole block of 16,
  at the output's full size, and is then reordered (about a third of the rest).

Two rewrites take that away without changing what the graph computes:
1. **Channel padding.** Every convolution whose output is not a graph output gets zero filters
   (zero weights, zero bias) up to a multiple of 16 channels. A zero channel stays exactly zero
   through ReLU, bilinear resizing and concatenation, and each convolution that reads it gets
   zero weights for it, so the real channels carry the same sums (the order of a sum may differ,
   to float32 rounding).
2. **The final upsample outside the graph.** A graph output made by a ×2 half-pixel bilinear
   Resize of a convolution is cut at the convolution; :func:`upsample2x` does the resize with
   OpenCV, whose INTER_LINEAR is the same half-pixel bilinear with the same edge clamping (to
   float32 rounding: 4e-6 on the shipped models' logits, which reach 33).

No library does this: onnxruntime pads the channels inside one convolution but not across a
Concat, and onnx's own tools (and onnx-simplifier) fold constants and fuse nodes but keep every
tensor's width. Only graphs built of the operators this network uses (Conv, Relu, Resize, Concat,
Constant, with resizes that keep the channels) are rewritten; for anything else :func:`rewrite`
raises :class:`NotRewritable` with the reason, and the file runs as it is. The runtime also checks
each rewrite against the original graph on one input before using it (``SegModel``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

BLOCK = 16  # AVX-512's NCHWc block; a multiple of AVX2's 8 too


class NotRewritable(Exception):
    """The graph holds something the rewrite does not know: it runs as it is (the message says what)."""


@dataclass
class Rewritten:
    """A rewritten graph (serialised ONNX) and the outputs the caller must upsample ×2."""

    model: bytes
    upsampled: frozenset[str]
    padded_convs: int  # convolutions whose outputs were padded to a multiple of BLOCK
    widened_convs: int  # convolutions only given wider (padded) inputs


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _scales(node, consts: dict) -> np.ndarray | None:
    """A Resize's constant scales (opset 10: its second input; later: its third, with no
    ``sizes``), None when they are not constant or sizes are given instead."""
    ins = list(node.input)
    if len(ins) == 2:
        name = ins[1]
    elif len(ins) >= 3 and not (len(ins) > 3 and ins[3]):
        name = ins[2]
    else:
        return None
    v = consts.get(name)
    return None if v is None else np.asarray(v, np.float64)


def _is_final_upsample(node, consts: dict) -> bool:
    """A Resize that doubles H and W, half-pixel bilinear, as PyTorch exports
    ``interpolate(scale_factor=2, mode="bilinear", align_corners=False)``."""
    if node.op_type != "Resize" or len(node.input) < 3:
        return False  # opset 10's Resize(X, scales) maps coordinates asymmetrically, not half-pixel
    mode = _attr(node, "mode", b"nearest")
    ctm = _attr(node, "coordinate_transformation_mode", b"half_pixel")
    if mode != b"linear" or ctm not in (b"half_pixel", b"pytorch_half_pixel"):
        return False
    if _attr(node, "antialias", 0) or _attr(node, "exclude_outside", 0) or _attr(node, "axes") is not None:
        return False
    scales = _scales(node, consts)
    return scales is not None and scales.shape == (4,) and np.array_equal(scales, [1.0, 1.0, 2.0, 2.0])


def _keeps_channels(node, consts: dict) -> bool:
    """A Resize inside the graph that leaves N and C alone and fills nothing from outside the
    image (a zero channel must come out zero)."""
    scales = _scales(node, consts)
    if scales is None or scales.shape != (4,) or scales[0] != 1 or scales[1] != 1:
        return False
    return _attr(node, "coordinate_transformation_mode", b"half_pixel") != b"tf_crop_and_resize" and (
        _attr(node, "axes") is None
    )


def rewrite(data: bytes) -> Rewritten:
    """``data``: an ONNX model. The rewritten model; :class:`NotRewritable` (saying what) when
    the graph holds anything the rewrite does not know, or nothing to gain."""
    try:
        return _rewrite(data)
    except NotRewritable:
        raise
    except Exception as e:  # a graph malformed in a way the checks above did not foresee
        raise NotRewritable(f"the graph could not be read for the rewrite ({type(e).__name__}: {e})") from None


def _rewrite(data: bytes) -> Rewritten:
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer):
        raise NotRewritable("its weights are stored outside the file")
    if any(i.name in inits for i in g.input):
        raise NotRewritable("its weights are listed as graph inputs (an older exporter): they could be fed")
    consts: dict[str, np.ndarray] = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    for n in g.node:
        if n.op_type == "Constant":
            value = _attr(n, "value")
            if value is None:
                raise NotRewritable(f"a Constant node ({n.name}) without a tensor value")
            consts[n.output[0]] = numpy_helper.to_array(value)
    producers = {o: n for n in g.node for o in n.output}
    outputs = [o.name for o in g.output]
    uses = Counter(t for n in g.node for t in n.input)  # how many nodes read each tensor

    # 2. Outputs made by a final x2 upsample of a convolution: the convolution writes the output.
    cut: dict[str, str] = {}  # the convolution's tensor -> the output's name
    drop = set()
    for name in outputs:
        rs = producers.get(name)
        if rs is None or not _is_final_upsample(rs, consts):
            continue
        conv = producers.get(rs.input[0])
        # Only an output nothing else reads: a node reading the upsampled logits would get them
        # at half size.
        if conv is None or conv.op_type != "Conv" or uses[rs.input[0]] != 1 or rs.input[0] in outputs or uses[name]:
            continue
        cut[rs.input[0]] = name
        drop.add(id(rs))

    # 1. Channel padding: each tensor's channels -> (their positions in the padded tensor, width).
    terminal = set(outputs) | set(cut)
    for n in reversed(list(g.node)):
        if n.op_type in ("Relu", "Resize") and n.output[0] in terminal:
            terminal.add(n.input[0])
    maps: dict[str, tuple[np.ndarray, int]] = {}
    new: dict[str, np.ndarray] = {}
    padded = widened = 0
    for n in g.node:
        if n.op_type == "Constant" or id(n) in drop:
            continue
        if n.op_type == "Conv":
            if len(n.input) < 3 or n.input[1] not in inits or n.input[2] not in inits:
                raise NotRewritable(f"convolution {n.name} has no bias or weights of its own")
            if n.input[1] in new or n.input[2] in new:
                raise NotRewritable(f"convolution {n.name} shares its weights with another")
            w, b = consts[n.input[1]], consts[n.input[2]]
            group = int(_attr(n, "group", 1))
            co, ci = w.shape[:2]
            pos, width = maps.get(n.input[0], (np.arange(ci * group), ci * group))
            if group == 1:
                wo = co if n.output[0] in terminal else -(-co // BLOCK) * BLOCK
                w2 = np.zeros((wo, width, *w.shape[2:]), w.dtype)
                w2[:co, pos] = w
                b2 = np.zeros(wo, b.dtype)
                b2[:co] = b
                maps[n.output[0]] = (np.arange(co), wo)
            elif ci == 1 and group == co == len(pos):  # depthwise: each channel its own filter
                w2 = np.zeros((width, 1, *w.shape[2:]), w.dtype)
                w2[pos] = w
                b2 = np.zeros(width, b.dtype)
                b2[pos] = b
                for a in n.attribute:
                    if a.name == "group":
                        a.i = width
                maps[n.output[0]] = (pos, width)
            else:
                raise NotRewritable(f"convolution {n.name} is grouped (group={group}) but not depthwise")
            if w2.shape[0] != w.shape[0]:
                padded += 1
            elif w2.shape != w.shape:
                widened += 1
            new[n.input[1]], new[n.input[2]] = w2, b2
        elif n.op_type == "Relu" or (n.op_type == "Resize" and _keeps_channels(n, consts)):
            if n.input[0] in maps:
                maps[n.output[0]] = maps[n.input[0]]
        elif n.op_type == "Concat":
            if _attr(n, "axis") != 1 or any(t not in maps for t in n.input):
                raise NotRewritable(f"concatenation {n.name} is not of convolution outputs along the channels")
            pos_all, off = [], 0
            for t in n.input:
                p, w_ = maps[t]
                pos_all.append(p + off)
                off += w_
            maps[n.output[0]] = (np.concatenate(pos_all), off)
        else:
            raise NotRewritable(f"it holds a {n.op_type} node ({n.name}), which the rewrite does not know")
    for name in list(outputs) + list(cut):
        if name in maps:
            p, w_ = maps[name]
            if w_ != len(p) or not np.array_equal(p, np.arange(w_)):
                raise NotRewritable(f"output {name} would come out padded")
    if not padded and not widened and not cut:
        raise NotRewritable("nothing to gain: every width is a whole number of blocks and no output is upsampled")

    for name, arr in new.items():
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    keep = [n for n in g.node if id(n) not in drop]
    # The dropped resizes' scale constants go too: onnxruntime warns about each unused one.
    used = {t for n in keep for t in n.input}
    orphans = {t for n in g.node if id(n) in drop for t in n.input} - used
    keep = [n for n in keep if not (n.op_type == "Constant" and n.output[0] in orphans)]
    for t in [t for t in g.initializer if t.name in orphans]:
        g.initializer.remove(t)
    for n in keep:
        for i, o in enumerate(n.output):
            if o in cut:
                n.output[i] = cut[o]
    del g.node[:]
    g.node.extend(keep)
    # Declared shapes of intermediate tensors would now be wrong; onnxruntime infers them again.
    del g.value_info[:]
    for o in g.output:
        if o.name in cut.values():
            for d, axis in zip(o.type.tensor_type.shape.dim[2:], ("h", "w")):
                d.ClearField("dim_value")
                d.dim_param = f"{o.name}_half_{axis}"
    onnx.checker.check_model(model)
    return Rewritten(model.SerializeToString(), frozenset(cut.values()), padded, widened)


def upsample2x(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) float32 -> (N, C, 2H, 2W): half-pixel bilinear, edges clamped, as the
    ONNX Resize it replaces. One OpenCV call per plane: cheaper here than one call on a
    channels-last copy (the transposes cost more than the calls)."""
    x = np.asarray(x, np.float32)  # OpenCV would write another type into a fresh array, not ``out``
    n, c, h, w = x.shape
    out = np.empty((n, c, 2 * h, 2 * w), np.float32)
    for i in range(n):
        for j in range(c):
            cv2.resize(x[i, j], (2 * w, 2 * h), dst=out[i, j], interpolation=cv2.INTER_LINEAR)
    return out
