"""The ONNX file a training writes and reads: export with the metadata the runtime checks
(classes, scales, normalisation, the channels each stage takes, the training settings), and a
network's weights taken back from an exported model (``scallop train --init``).
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from scallop.models.runtime import CHANNELS, FORMAT
from scallop.models.train import FINDER_CLASSES, PARTS_CLASSES, TrainConfig, norm_of


def export_onnx(net, path: Path, cfg: TrainConfig, extra_meta: dict) -> None:
    """One self-contained .onnx (weights inside, no .onnx.data) with the metadata the
    runtime reads."""
    import io

    import onnx
    import torch

    net.eval()
    S = cfg.crop
    fp, pp = net.planes
    if (fp, pp) != (cfg.planes("finder"), cfg.planes("parts")):
        raise ValueError(f"the network takes {fp} + {pp} planes but uv_stages={list(cfg.uv_stages)!r} says otherwise")
    frame = torch.zeros(1, fp, 96, 160)
    crops = torch.zeros(2, pp, S, S)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The one warning tracing gives is for the upsampling's check that a level is half the
        # one above (models/net.py): traced as a constant, it holds for every input the pipeline
        # gives (frames padded to a multiple of 16, crops of one fixed size). Shown, it alarmed
        # every user of ``scallop train`` with a "might be incorrect" of several lines.
        warnings.filterwarnings(
            "ignore", message="Converting a tensor to a Python boolean", category=torch.jit.TracerWarning
        )
        torch.onnx.export(
            net,
            (frame, crops),
            buf,
            opset_version=17,
            dynamo=False,
            input_names=["frame", "crops"],
            output_names=["finder_logits", "parts_logits"],
            dynamic_axes={
                "frame": {0: "b", 2: "h", 3: "w"},
                "finder_logits": {0: "b", 2: "h", 3: "w"},
                "crops": {0: "n"},
                "parts_logits": {0: "n"},
            },
        )
    model = onnx.load_from_string(buf.getvalue())
    # A colour-only model stays format version 1, its metadata what it always was (older
    # runtimes read it); one with the fluorescence channel is version 2, where each stage names
    # its channels and the normalisation has one entry per plane.
    uv = bool(cfg.uv_stages)
    mean, std = norm_of(4 if uv else 3)

    def channels(stage: str) -> dict:
        return {"channels": list(CHANNELS if stage in cfg.uv_stages else CHANNELS[:1])} if uv else {}

    train_config = asdict(cfg)
    if not uv:
        del train_config["uv_stages"]
    meta = {
        "scallop.format": FORMAT,
        "scallop.version": "2" if uv else "1",
        "scallop.channel_order": "BGR",
        "scallop.normalize": json.dumps({"mean": list(mean), "std": list(std), "input_range": [0, 255]}),
        "scallop.finder": json.dumps(
            {
                "input": "frame",
                "output": "finder_logits",
                "classes": list(FINDER_CLASSES),
                "mm_per_px": cfg.finder_mm_per_px,
                "multiple": 16,
                **channels("finder"),
            }
        ),
        "scallop.parts": json.dumps(
            {
                "input": "crops",
                "output": "parts_logits",
                "classes": list(PARTS_CLASSES),
                "mm_per_px": cfg.parts_mm_per_px,
                "size": S,
                **channels("parts"),
            }
        ),
        "scallop.seed": str(cfg.seed),
        "scallop.train_config": json.dumps(train_config),
        "scallop.data": cfg.data_description,
        "scallop.trained_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra_meta.items()})
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.producer_name = "scallop-train"
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=False)


def onnx_train_config(path: Path) -> dict:
    """The training config an exported model carries (``scallop.train_config``), {} if none."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    try:
        return json.loads(meta.get("scallop.train_config", "{}"))
    except json.JSONDecodeError:
        return {}


def init_from_onnx(net, path: Path, crop: int) -> None:
    """Load the weights of an exported model into ``net``. Export folds each batch norm into
    the convolution before it, so those convolutions get the folded weights and bias and their
    batch norms become the identity (mean 0, variance 1 − eps, scale 1, shift = the bias),
    which training then keeps fixed (``freeze_bn``). The result is checked against
    onnxruntime on the same input: a file that is not this network is refused. A colour-only
    model may seed a network whose stages also take the fluorescence plane: that plane's
    weights in the first convolution start at zero."""
    import onnx
    import onnxruntime as ort
    import torch
    import torch.nn as nn
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "Conv"]
    order: list = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m)) for m in net.modules() if isinstance(m, nn.Conv2d)
    ]
    net.eval()
    fp, pp = net.planes
    frame, crops = torch.rand(1, fp, 64, 96), torch.rand(2, pp, crop, crop)
    with torch.no_grad():
        net(frame, crops)
    for h in hooks:
        h.remove()
    bn_after = {}
    for seq in (m for m in net.modules() if isinstance(m, nn.Sequential)):
        for a, b in zip(seq, list(seq)[1:]):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                bn_after[a] = b
    stems = {net.finder.stem[0], net.parts.stem[0]}

    def widen(theirs, ours) -> bool:
        return len(theirs) == 4 and theirs[1] == 3 and ours[1] == 4 and theirs[0] == ours[0] and theirs[2:] == ours[2:]

    if len(order) != len(nodes):
        raise ValueError(f"{path}: {len(nodes)} convolutions, this network has {len(order)}: not a model to fine-tune")
    with torch.no_grad():
        for conv, node in zip(order, nodes):
            w = inits.get(node.input[1])
            b = inits.get(node.input[2]) if len(node.input) > 2 else None
            if w is not None and conv in stems and widen(w.shape, conv.weight.shape):
                # A colour model's stem into a stage that also takes the fluorescence plane:
                # that plane's weights start at zero, so the widened network starts as the
                # colour model did and training decides what the channel is worth.
                w = np.concatenate([w, np.zeros((w.shape[0], 1, *w.shape[2:]), w.dtype)], axis=1)
            if w is None or tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{path}: convolution {node.name} does not fit this network: not a model to fine-tune")
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            bias = torch.from_numpy(np.array(b)) if b is not None else torch.zeros(w.shape[0])
            bn = bn_after.get(conv)
            if bn is not None:
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
            elif conv.bias is not None:
                conv.bias.copy_(bias)
        want = net(frame, crops)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # A colour model reads the first three planes only (a widened stem ignores the fourth).
    feed = {i.name: {"frame": frame, "crops": crops}[i.name] for i in sess.get_inputs()}
    feed = {
        k: (v[:, : i.shape[1]] if isinstance(i.shape[1], int) else v).numpy()
        for (k, v), i in zip(feed.items(), sess.get_inputs())
    }
    got = sess.run(None, feed)
    err = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if err > 1e-3:
        raise ValueError(
            f"{path}: its weights do not reproduce the model here (difference {err:.3g}): not a model to fine-tune"
        )
