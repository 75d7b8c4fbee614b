"""``scallop bench vision``: the figures it writes (never its timings: no timed unit tests)."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

from scallop.app.cli import main
from scallop.app.commands.bench_vision import _scallop_range, bench_frames, side_by_side
from scallop.errors import ConfigError


def _anchor(path):
    """A stand-in for the YOLOv8n-seg anchor with its input (1, 3, 640, 640): what is timed
    around it (decode, letterbox, one run) is the benchmark's, not the network's."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 1, 1])
    node = helper.make_node("GlobalAveragePool", ["images"], ["t"])
    red = helper.make_node("ReduceMean", ["t"], ["out"], keepdims=1)
    m = helper.make_model(
        helper.make_graph([node, red], "anchor", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.save(m, str(path))
    return path


def test_frames_cover_the_whole_count_range():
    counts = []
    frames = bench_frames(3, 640, 480, 0.5, 7, 0, 2, counts=counts)
    assert len(frames) == 3 and all(f.shape == (480, 640, 3) for f in frames)
    assert counts == [0, 1, 2]  # the scallops in view, as asked for frame by frame


def test_profile_and_side_by_side_are_written(tmp_path, capsys):
    out = tmp_path / "v.json"
    argv = ["bench", "vision", "--frames", "4", "--distinct", "2", "--warmup", "1", "--scallops", "0,2"]
    argv += ["--width", "640", "--height", "480", "--profile", "--anchor", str(_anchor(tmp_path / "a.onnx"))]
    assert main([*argv, "--files", "3", "--repeats", "2", "--jobs", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    # The frames' own scallops (0, 1, 0, 1 cycled), beside what the pipeline found in them.
    assert res["frames"] == 4 and res["scallops_range"] == [0, 1] and res["scallops_per_frame"] == 0.5
    assert res["detections_per_frame"] >= 0
    # CPU of every thread while analysing (a loaded machine may leave a core waiting), at most
    # all cores; per frame against the frame's wall time.
    assert 0 < res["cpu_ms_per_frame"] and 0 < res["cores_busy"] <= res["cpus"] + 0.05
    assert res["cores_busy"] == pytest.approx(res["cpu_ms_per_frame"] / res["mean_ms"], abs=0.02)
    assert {"decode", "finder", "crops", "parts", "post"} <= {k[:-3] for k in res["profile"]}
    assert all(v["p99_ms"] >= v["median_ms"] > 0 for v in res["profile"].values())
    f = res["files"]
    assert f["files"] == 3 and len(f["ratio_per_round"]) == 2 and f["ratio_of_medians"] > 0
    assert f["anchor_file"] == "a.onnx" and len(res["load_avg_before"]) == 3
    # Three loops, both sides: worker processes (scallop detect's on a large folder, the
    # headline), one process reading ahead (a small folder), and file by file.
    assert f["jobs"] == 2 and len(f["scallop"]["per_round_ms"]) == len(f["anchor"]["per_round_ms"]) == 2
    assert "worker processes" in f["loop"] and f["ratio_to_anchor_protocol"] > 0
    assert f["workers_start_s"]["scallop"] > 0 and f["workers_start_s"]["anchor"] > 0
    for loop in ("ahead", "serial"):
        assert len(f[loop]["ratio_per_round"]) == 2 and f[loop]["scallop"]["median_ms"] > 0
    assert "read ahead" in f["ahead"]["loop"] and "file by file" in f["serial"]["loop"]
    assert "faster" in capsys.readouterr().out


def test_read_ahead_keeps_the_order_hands_errors_over_and_leaves_no_thread():
    import threading

    from scallop.imagefiles import read_ahead

    def read(p):
        if p == "bad":
            raise ValueError("unreadable")
        return p.upper()

    got = list(read_ahead(["a", "bad", "c"], read))
    assert [p for p, _ in got] == ["a", "bad", "c"] and got[0][1] == "A" and got[2][1] == "C"
    assert isinstance(got[1][1], ValueError)
    for _, _ in read_ahead(["x", "y", "z"], read):
        break  # a caller that stops early
    assert not [t for t in threading.enumerate() if t.name.startswith("read-ahead")]
    assert list(read_ahead([], read)) == []


@pytest.mark.parametrize("text", ["5", "4,2", "a,b", "0,31"])
def test_a_bad_scallop_range_is_refused_by_name(text):
    with pytest.raises(ConfigError, match="--scallops"):
        _scallop_range(text)


@pytest.mark.parametrize(
    "opt, value",
    [("--warmup", "-3"), ("--mm-per-px", "nan"), ("--width", "100000"), ("--height", "0"), ("--threads", "0")],
)
def test_bad_options_are_refused_by_their_own_names(opt, value, capsys):
    """Not in the words of the config keys they feed (``threads=0``, ``resolutions[0].width``)."""
    assert main(["bench", "vision", "--frames", "1", opt, value]) == 2
    err = capsys.readouterr().err
    assert f"{opt}={value}" in err and "resolutions" not in err


def test_jobs_without_an_anchor_is_refused(capsys):
    assert main(["bench", "vision", "--frames", "1", "--jobs", "1"]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_a_missing_anchor_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="missing.onnx"):
        side_by_side(str(tmp_path / "missing.onnx"), [], 1, 1, 0.5, 1, 1, None)


def test_an_unwritable_out_is_refused_before_the_benchmark_runs(tmp_path, capsys, monkeypatch):
    """Every benchmark: --out is checked first, not after minutes of work whose figures are lost."""
    import scallop.app.commands.bench_vision as bv

    monkeypatch.setattr(bv, "bench_frames", lambda *a, **k: pytest.fail("the benchmark ran"))
    assert main(["bench", "vision", "--frames", "5", "--out", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "--out" in err and "is a folder" in err and "Traceback" not in err
    assert main(["bench", "accuracy", "--frames", "2", "--out", str(tmp_path)]) == 3
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["junk", "two inputs"])
def test_an_anchor_that_is_no_one_image_network_is_refused_up_front(tmp_path, capsys, monkeypatch, kind):
    import scallop.app.commands.bench_vision as bv

    if kind == "junk":
        anchor = tmp_path / "a.onnx"
        anchor.write_text("not a model")
        want = "not a loadable ONNX model"
    else:
        from scallop.models.runtime import default_model_path

        anchor = default_model_path()  # our own model: two inputs
        want = "the anchor takes one image"
    monkeypatch.setattr(bv, "bench_frames", lambda *a, **k: pytest.fail("the benchmark ran"))
    out = tmp_path / "v.json"
    assert main(["bench", "vision", "--frames", "5", "--anchor", str(anchor), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--anchor {anchor}" in err and want in err and "internal error" not in err
    assert not out.exists()
