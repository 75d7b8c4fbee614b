"""The model graph rewritten for onnxruntime's CPU kernels (models/cpugraph.py): the same
outputs as the file's graph, on a graph built here and on both shipped models, every width
padded where it should be, and the file's own graph whenever the rewrite does not apply."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from scallop.models import cpugraph
from scallop.models.runtime import DEFAULT_UV_MODEL_NAME, SegModel, default_model_path
from scallop.vision.pipeline import Pipeline


def _session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _resize_x2(name_in: str, name_out: str, scales: str) -> onnx.NodeProto:
    return helper.make_node(
        "Resize", [name_in, "", scales], [name_out], mode="linear", coordinate_transformation_mode="half_pixel"
    )


def _unet_like(rng, extra_op: str | None = None) -> bytes:
    """A small graph with this network's shapes of trouble: a 12-channel stem, a depthwise
    convolution, a Concat of 12 and 24 channels, a 3-class head behind a final x2 resize."""

    def w(*shape):
        return rng.normal(0, 0.5, shape).astype(np.float32)

    inits = {
        "w0": w(12, 3, 3, 3), "b0": w(12),
        "wd": w(12, 1, 3, 3), "bd": w(12),
        "w1": w(24, 12, 1, 1), "b1": w(24),
        "wd2": w(36, 1, 3, 3), "bd2": w(36),
        "w2": w(20, 36, 1, 1), "b2": w(20),
        "wh": w(3, 20, 1, 1), "bh": w(3),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "wd", "bd"], ["d0"], pads=[1, 1, 1, 1], group=12),
        helper.make_node("Relu", ["d0"], ["rd"]),
        helper.make_node("Conv", ["rd", "w1", "b1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Concat", ["r1", "r0"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "wd2", "bd2"], ["d2"], pads=[1, 1, 1, 1], group=36),
        helper.make_node("Relu", ["d2"], ["rd2"]),
        helper.make_node("Conv", ["rd2", "w2", "b2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "wh", "bh"], ["head"]),
        helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32))),
        _resize_x2("head", "y", "s"),
    ]
    if extra_op:  # an operator the rewrite does not know, between the stem and the rest
        nodes[1] = helper.make_node(extra_op, ["c0"], ["r0"])
    graph = helper.make_graph(
        nodes,
        "unet_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _widths(data: bytes) -> dict[str, int]:
    """Output channels of each convolution in a serialised model."""
    m = onnx.load_from_string(data)
    inits = {i.name: i for i in m.graph.initializer}
    return {n.output[0]: inits[n.input[1]].dims[0] for n in m.graph.node if n.op_type == "Conv"}


def test_upsample2x_is_the_onnx_half_pixel_bilinear_resize():
    rng = np.random.default_rng(0)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    graph = helper.make_graph(
        [_resize_x2("x", "y", "s")],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [scales],
    )
    sess = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    for shape in ((3, 4, 64, 64), (1, 3, 96, 160), (2, 1, 5, 7)):
        x = rng.normal(0, 8, shape).astype(np.float32)
        got = cpugraph.upsample2x(x)
        assert got.shape == shape[:2] + (2 * shape[2], 2 * shape[3]) and got.dtype == np.float32
        assert np.abs(got - sess.run(None, {"x": x})[0]).max() < 1e-5
    assert cpugraph.upsample2x(np.zeros((0, 4, 64, 64), np.float32)).shape == (0, 4, 128, 128)


def test_a_built_graph_gives_the_same_outputs_with_every_inner_width_a_block():
    rng = np.random.default_rng(1)
    data = _unet_like(rng)
    done = cpugraph.rewrite(data)
    assert (
        done.upsampled == {"y"} and done.padded_convs == 5 and done.widened_convs == 1
    )  # the head reads padded inputs
    widths = _widths(done.model)
    # Every convolution but the head (a graph output) is a whole number of blocks; the Concat
    # of 12 + 24 channels became 16 + 32, and the depthwise convolution after it is 48 wide.
    assert widths.pop("y") == 3 and all(v % cpugraph.BLOCK == 0 for v in widths.values())
    assert widths["d2"] == 48 and widths["c0"] == 16 and widths["c1"] == 32
    assert not any(n.op_type == "Resize" for n in onnx.load_from_string(done.model).graph.node)
    plain, fast = _session(data), _session(done.model)
    for shape in ((1, 3, 32, 48), (4, 3, 64, 64)):
        x = rng.normal(0, 1, shape).astype(np.float32)
        want = plain.run(None, {"x": x})[0]
        got = cpugraph.upsample2x(fast.run(None, {"x": x})[0])
        assert got.shape == want.shape == shape
        assert np.abs(got - want).max() < 1e-4


def test_a_graph_with_an_operator_the_rewrite_does_not_know_is_left_alone():
    rng = np.random.default_rng(2)
    with pytest.raises(cpugraph.NotRewritable, match="holds a Sigmoid node"):  # sigmoid(0) is not 0
        cpugraph.rewrite(_unet_like(rng, extra_op="Sigmoid"))
    # Nothing to gain: no width to pad, no final resize.
    w = numpy_helper.from_array(np.ones((16, 3, 1, 1), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(16, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
        [w, b],
    )
    with pytest.raises(cpugraph.NotRewritable, match="nothing to gain"):
        cpugraph.rewrite(helper.make_model(graph).SerializeToString())


def _edit(data: bytes, fn) -> bytes:
    m = onnx.load_from_string(data)
    fn(m.graph)
    return m.SerializeToString()


def test_an_upsampled_output_that_another_node_reads_stays_in_the_graph():
    rng = np.random.default_rng(4)

    def also_read(g):  # z = relu(y): y must stay full size inside the graph
        g.node.append(helper.make_node("Relu", ["y"], ["z"]))
        g.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 3, "h", "w"]))

    data = _edit(_unet_like(rng), also_read)
    done = cpugraph.rewrite(data)
    assert done.upsampled == frozenset() and done.padded_convs == 5
    x = rng.normal(0, 1, (2, 3, 32, 48)).astype(np.float32)
    for want, got in zip(_session(data).run(None, {"x": x}), _session(done.model).run(None, {"x": x})):
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


def test_graphs_the_rewrite_would_get_wrong_are_refused_with_the_reason():
    rng = np.random.default_rng(5)
    data = _unet_like(rng)

    def channel_resize(g):  # a Resize that doubles the channels: widths would no longer line up
        for n in g.node:
            if n.op_type == "Relu" and n.output[0] == "r1":
                n.op_type = "Resize"
                n.input.extend(["", "s2"])
        g.node.insert(0, helper.make_node("Constant", [], ["s2"], value=numpy_helper.from_array(
            np.array([1, 2, 1, 1], np.float32))))  # fmt: skip

    with pytest.raises(cpugraph.NotRewritable, match="holds a Resize node"):
        cpugraph.rewrite(_edit(data, channel_resize))

    def weights_as_inputs(g):  # an older exporter's habit: the weights could be fed
        g.input.append(helper.make_tensor_value_info("w0", TensorProto.FLOAT, [12, 3, 3, 3]))

    with pytest.raises(cpugraph.NotRewritable, match="weights are listed as graph inputs"):
        cpugraph.rewrite(_edit(data, weights_as_inputs))
    with pytest.raises(cpugraph.NotRewritable, match="could not be read"):
        cpugraph.rewrite(b"not a model")


def test_upsample2x_takes_any_float_and_gives_float32():
    x = np.random.default_rng(6).normal(0, 4, (1, 2, 5, 6))
    got = cpugraph.upsample2x(x)  # float64 in: OpenCV would have written a fresh array, not ours
    assert got.dtype == np.float32 and np.abs(got - cpugraph.upsample2x(x.astype(np.float32))).max() == 0


@pytest.mark.parametrize("name", ["scallop-seg.onnx", DEFAULT_UV_MODEL_NAME])
def test_the_shipped_models_run_rewritten_with_the_files_outputs(name):
    path = default_model_path().parent / name
    plain, fast = SegModel(path, rewrite=False), SegModel(path)
    assert plain.graph == "as in the file"
    # Their widths are multiples of 16 already (stop 33): only the final upsamples move out.
    assert fast.graph == (
        "rewritten for the CPU: no convolution needed padding to 16 channels, 2 outputs upsampled outside the graph"
    )
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (192, 320, 3), np.uint8)
    uv = rng.integers(0, 256, (192, 320), np.uint8)
    crops = rng.integers(0, 256, (7, 128, 128, 3), np.uint8)
    crops_uv = rng.integers(0, 256, (7, 128, 128), np.uint8)
    want, got = plain.run_finder(frame, uv), fast.run_finder(frame, uv)
    assert got.shape == want.shape == (3, 192, 320) and np.abs(got - want).max() < 1e-4
    want, got = plain.run_parts(crops, crops_uv), fast.run_parts(crops, crops_uv)
    assert got.shape == want.shape == (7, 4, 128, 128) and np.abs(got - want).max() < 1e-4
    assert fast.run_parts(crops[:0], crops_uv[:0]).shape == (0, 4, 128, 128)


def test_the_pipeline_finds_the_same_scallops_and_grasps_with_either_graph():
    from scallop.app.commands.bench_vision import bench_frames

    frames = bench_frames(6, 1280, 720, 0.5, 11, 3, 9)
    plain, fast = Pipeline(SegModel(None, rewrite=False)), Pipeline(SegModel(None))
    seen = 0
    for f in frames:
        a, b = plain.detect(f), fast.detect(f)
        assert len(a) == len(b) and list(a.reason) == list(b.reason)
        np.testing.assert_allclose(b.grasp_px, a.grasp_px, atol=1e-6)
        np.testing.assert_allclose(b.uro_confidence, a.uro_confidence, atol=1e-4)
        seen += int(a.uro_found.sum())
    assert seen >= 15


def test_a_rewrite_that_does_not_hold_leaves_the_files_graph_and_says_so(monkeypatch, caplog):
    real = cpugraph.upsample2x
    monkeypatch.setattr(cpugraph, "upsample2x", lambda x: real(x) + 0.01)
    with caplog.at_level(logging.WARNING, logger="scallop.models.runtime"):
        m = SegModel(None)
    assert m.graph == "as in the file (its rewrite failed the check: output 'finder_logits' differs from the file's)"
    assert "its CPU rewrite is not used: output 'finder_logits' differs from the file's" in caplog.text
    # And it runs the file's graph: full-size outputs straight from onnxruntime.
    out = m.run_finder(np.zeros((64, 96, 3), np.uint8))
    assert out.shape == (3, 64, 96)


def test_a_model_exported_for_one_frame_size_runs_both_stages(tmp_path):
    """A graph whose finder input is fixed (H and W numbers, not names) is fed that size, also in
    the empty batch that goes with a parts run, and still gets the rewrite."""
    m = onnx.load(str(default_model_path()))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].ClearField("dim_param")
    dims[2].dim_value = 192
    dims[3].ClearField("dim_param")
    dims[3].dim_value = 320
    path = tmp_path / "fixed.onnx"
    onnx.save(m, str(path))
    fixed = SegModel(path)
    assert fixed.graph.startswith("rewritten for the CPU")
    crops = np.zeros((3, 128, 128, 3), np.uint8)
    assert fixed.run_parts(crops).shape == (3, 4, 128, 128)
    assert fixed.run_finder(np.zeros((192, 320, 3), np.uint8)).shape == (3, 192, 320)


def test_an_opset_10_resize_is_not_taken_for_a_half_pixel_one():
    """Opset 10's Resize(X, scales) has no coordinate mode: it maps asymmetrically, so the final
    upsample is not cut (OpenCV's half-pixel would differ), and the result stays exact."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.normal(0, 1, (3, 3, 1, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    s = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["h"]),
            helper.make_node("Resize", ["h", "s"], ["y"], mode="linear"),
        ],
        "op10",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])],
        [w, b, s],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)]).SerializeToString()
    with pytest.raises(cpugraph.NotRewritable, match="nothing to gain"):
        cpugraph.rewrite(data)
