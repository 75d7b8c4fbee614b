"""``scallop detect`` over many images in worker processes (``--jobs``): the same output in the
same order as one process, every failure still said and counted, a dead worker said, and the
worker pool itself (order, errors, a killed process)."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from scallop.app.cli import main
from scallop.app.commands import detect
from scallop.errors import ConfigError
from scallop.imagefiles import companion_path, companion_paths
from scallop.sim.dataset import DatasetSettings, write_dataset
from scallop.workers import WorkerDiedError, WorkerPool, usable_cores


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six colour frames, one cut short in the middle, a frame pair (x.jpg + x.uv.png), and a
    frame of the same name in a second folder (annotated names must not collide)."""
    sim = tmp_path_factory.mktemp("sim") / "set"
    st = DatasetSettings(resolutions=[(640, 480)], scallops=(2, 4), mm_per_px=(0.5, 0.5), fluorescence=True)
    write_dataset(sim, 4, seed=5, settings=st, workers=1)
    frames = sorted(p for p in (sim / "images").iterdir() if not p.name.endswith(".uv.png"))
    root = tmp_path_factory.mktemp("many")
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    paths = []
    for i, f in enumerate(frames[:3]):
        img = cv2.imread(str(f))
        p = a / f"f{i}.jpg"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(p)
    cut = a / "f9_cut.jpg"
    cut.write_bytes(paths[0].read_bytes()[:300])
    pair = a / "pair.jpg"
    cv2.imwrite(str(pair), cv2.imread(str(frames[3])), [cv2.IMWRITE_JPEG_QUALITY, 90])
    shutil.copy(frames[3].with_name(frames[3].stem + ".uv.png"), a / "pair.uv.png")
    twin = b / "f0.jpg"
    shutil.copy(paths[1], twin)
    return [str(paths[0]), str(cut), str(paths[1]), str(pair), str(paths[2]), str(twin)]


def _detect(capfd, folder, out_dir, *extra):
    rc = main(["detect", "--mm-per-px", "0.5", "--json", "--annotate", str(out_dir), *extra, *folder])
    out, err = capfd.readouterr()
    return rc, [json.loads(ln) for ln in out.splitlines()], err


two_cores = pytest.mark.skipif(usable_cores() < 2, reason="two worker processes need two cores")


@two_cores
def test_worker_processes_give_what_one_process_gives_in_the_same_order(folder, tmp_path, capfd):
    rc1, recs1, err1 = _detect(capfd, folder, tmp_path / "one", "--jobs", "1")
    rc2, recs2, err2 = _detect(capfd, folder, tmp_path / "two", "--jobs", "2")
    # The cut-short file is said once and counted (exit 1); the others are analysed all the same.
    assert rc1 == rc2 == 1
    assert err1.count("error:") == err2.count("error:") == 1
    assert "f9_cut.jpg" in err2 and "Traceback" not in err2
    assert [r["image"] for r in recs2] == [p for p in folder if "cut" not in p]
    # Two processes against one, each image analysed alike: the same numbers bit for bit.
    assert recs2 == recs1
    assert [r["channels"] for r in recs2] == [["bgr"], ["bgr"], ["bgr", "uv"], ["bgr"], ["bgr"]]
    assert sum(len(r["scallops"]) for r in recs2) >= 5
    # Annotated images: the same names (the second f0 gets f0-2) and the same pixels.
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == ["f0-2_det.png", "f0_det.png", "f1_det.png", "f2_det.png", "pair_det.png"]
    for n in names:
        assert np.array_equal(cv2.imread(str(tmp_path / "one" / n)), cv2.imread(str(tmp_path / "two" / n)))


@two_cores
def test_a_worker_that_dies_is_said_and_the_images_left_are_counted(folder, tmp_path, capfd, monkeypatch):
    def dying_map(self, fn, items):
        for i, _ in enumerate(items):
            if i == 2:
                raise WorkerDiedError(
                    "a worker process ended unexpectedly (killed, out of memory, or it could not start)"
                )
            yield detect.Outcome(out=[json.dumps({"image": f"stand-in {i}"})])

    monkeypatch.setattr(WorkerPool, "map", dying_map)
    monkeypatch.setattr(WorkerPool, "__init__", lambda self, jobs, *a: setattr(self, "_ex", None))
    monkeypatch.setattr(WorkerPool, "close", lambda self, now=False: None)
    rc = main(["detect", "--mm-per-px", "0.5", "--json", "--jobs", "2", *folder])
    out, err = capfd.readouterr()
    assert rc == 1
    assert len(out.splitlines()) == 2
    assert "4 image(s) not analysed" in err and "killed, out of memory" in err
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize(
    "flag, value, allowed",
    [
        ("--jobs", "0", f"1..{usable_cores()}"),
        ("--jobs", str(usable_cores() + 1), f"1..{usable_cores()}"),  # more would only share the cores
        ("--threads", "0", "1..64"),
    ],
)
def test_jobs_and_threads_out_of_range_are_refused_before_any_image(folder, capfd, flag, value, allowed):
    assert main(["detect", "--mm-per-px", "0.5", flag, value, *folder]) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert f"{flag}={value}" in err and allowed in err and len(err.splitlines()) == 1


def test_worker_processes_only_where_they_pay(monkeypatch):
    from scallop import workers

    monkeypatch.setattr(workers, "available_memory_mb", lambda: None)  # the memory's share: below
    cores = min(usable_cores(), detect.MAX_AUTO_JOBS)
    assert detect.jobs_for(detect.MIN_IMAGES_FOR_WORKERS - 1, None) == 1
    assert detect.jobs_for(detect.MIN_IMAGES_FOR_WORKERS, None) == cores
    assert detect.jobs_for(3, 2) == 2  # as given
    assert detect.jobs_for(10**6, 1) == 1


def test_workers_are_no_more_than_the_memory_holds(folder, capfd, monkeypatch):
    """Each worker holds the models (about 140 MB measured, 300 reserved): by default no more
    than half the memory available now holds, and a --jobs past all of it is refused, naming
    the memory (a worker the system kills for memory loses its images)."""
    from scallop import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 8)
    monkeypatch.setattr(workers, "available_memory_mb", lambda: 1000.0)
    assert detect.folder_jobs() == 1  # 500 MB for workers: one
    monkeypatch.setattr(workers, "available_memory_mb", lambda: 1300.0)
    assert detect.folder_jobs() == 2
    assert workers.check_jobs("--jobs", 4) == 4
    monkeypatch.setattr(workers, "available_memory_mb", lambda: 100.0)
    assert detect.folder_jobs() == 1  # never none: one process always runs
    assert main(["detect", "--mm-per-px", "0.5", "--jobs", "2", *folder]) == 2
    out, err = capfd.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert (
        "--jobs=2: the memory available now (100 MB) holds not one worker of about 300 MB each: give --jobs 1," in err
    )
    monkeypatch.setattr(workers, "available_memory_mb", lambda: 950.0)
    with pytest.raises(
        ConfigError, match=r"\(950 MB\) holds 3 worker\(s\) of about 300 MB each: give --jobs 3 or fewer"
    ):
        workers.check_jobs("--jobs", 4)
    monkeypatch.setattr(workers, "available_memory_mb", lambda: None)  # not Linux: the cores decide
    assert detect.folder_jobs() == detect.MAX_AUTO_JOBS


@pytest.mark.parametrize("version", [1, 2])
def test_a_control_groups_memory_limit_counts(tmp_path, monkeypatch, version):
    """In a container the memory limit of its control group, not the machine's free memory,
    is what a worker may take (the group's folder is the mount's root there); page cache the
    kernel drops first is not counted as taken, and a limit on a group above counts too."""
    from scallop import workers

    root = tmp_path / "cgroup"
    mb = 2**20
    if version == 1:
        base = root / "memory"
        base.mkdir(parents=True)
        (base / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # none on the group itself
        (base / "memory.usage_in_bytes").write_text(f"{3900 * mb}\n")
        (base / "memory.stat").write_text(
            f"cache {3100 * mb}\nhierarchical_memory_limit {4096 * mb}\ntotal_inactive_file {3000 * mb}\n"
        )
        proc = "4:memory:/some/container\n"
    else:
        base = root / "slice" / "box"
        base.mkdir(parents=True)
        (base / "memory.max").write_text("max\n")
        (base / "memory.current").write_text(f"{3900 * mb}\n")
        (base / "memory.stat").write_text(f"anon {900 * mb}\ninactive_file {3000 * mb}\n")
        (root / "slice" / "memory.max").write_text(f"{4096 * mb}\n")  # the slice above limits it
        (root / "slice" / "memory.current").write_text(f"{3900 * mb}\n")
        (root / "slice" / "memory.stat").write_text(f"inactive_file {3000 * mb}\n")
        proc = "0::/slice/box\n"
    (tmp_path / "cgroup-of-self").write_text(proc)
    monkeypatch.setattr(workers, "_PROC_CGROUP", str(tmp_path / "cgroup-of-self"))
    monkeypatch.setattr(workers, "_CGROUP_ROOT", str(root))
    # 4096 MB limit, 3900 MB held of which 3000 MB is cache to drop: 3196 MB left, not 196.
    assert workers._cgroup_memory_left() == 3196 * mb
    assert workers.available_memory_mb() <= 3196
    if version == 1:
        (base / "memory.stat").write_text(f"hierarchical_memory_limit {2**63 - 4096}\n")
    else:
        (root / "slice" / "memory.max").write_text("max\n")
    assert workers._cgroup_memory_left() is None  # no limit anywhere


def test_companions_found_with_one_listing_per_folder(tmp_path, monkeypatch):
    # b's companion with its suffix in capitals (the stem is b's own, letter for letter).
    for name in ("a.jpg", "b.jpg", "c.jpg", "b.UV.PNG", "c.uv.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "d.uv.png").mkdir()  # not a file: still where d's companion is
    frames = [tmp_path / f"{s}.jpg" for s in "abcd"]
    want = [companion_path(f) for f in frames]
    listed = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: listed.append(p) or real(p))
    assert companion_paths(frames) == want
    assert [p.name for p in want] == ["a.uv.png", "b.UV.PNG", "c.uv.png", "d.uv.png"]
    assert len(listed) <= 1


def _square(x: int) -> int:
    if x == 5:
        raise ValueError("five is refused")
    return x * x


def _die(x: int) -> int:
    if x == 3:
        os._exit(9)  # as the kernel's out-of-memory killer would leave it: no result, no exception
    return x


def test_pool_results_in_order_and_errors_at_their_item():
    with WorkerPool(2) as pool:
        assert list(pool.map(_square, range(5))) == [0, 1, 4, 9, 16]
        got = []
        with pytest.raises(ValueError, match="five is refused"):
            for r in pool.map(_square, range(10)):
                got.append(r)
        assert got == [0, 1, 4, 9, 16]
        # The pool still works after an item's error, and for an empty input.
        assert list(pool.map(_square, [6, 7])) == [36, 49]
        assert list(pool.map(_square, [])) == []


def test_pool_says_when_a_process_dies():
    with WorkerPool(2) as pool:
        got = []
        with pytest.raises(WorkerDiedError, match="killed, out of memory"):
            for r in pool.map(_die, range(8)):
                got.append(r)
        assert got == list(range(len(got))) and len(got) <= 3


def _spawned_workers() -> int:
    """Worker processes of any multiprocessing spawn on this machine (their command line)."""
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    n += b"spawn_main" in f.read()
            except OSError:
                pass
    return n


@two_cores
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts processes in /proc")
@pytest.mark.parametrize("how", ["ctrl-c", "ctrl-c twice", "ctrl-c while starting", "sigterm", "killed"])
def test_stopping_detect_leaves_no_worker_and_no_traceback(folder, tmp_path, how):
    import signal
    import subprocess
    import sys
    import time

    many = tmp_path / "many"
    many.mkdir()
    for i in range(150):
        os.symlink(folder[0], many / f"{i:04d}.jpg")
    before = _spawned_workers()
    argv = [sys.executable, "-m", "scallop.app.cli", "detect", "--jobs", "2", "--mm-per-px", "0.5", "--json"]
    p = subprocess.Popen(
        [*argv, *sorted(str(x) for x in many.iterdir())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # Ctrl-C as a terminal's foreground job has it: a run started in the background of a
        # non-interactive shell (nohup … &) inherits SIGINT ignored, and the presses would do nothing.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        if how == "ctrl-c while starting":
            time.sleep(0.3)  # the workers' interpreters still importing
        else:
            assert p.stdout.readline().startswith(b"{")  # the workers are at it
        if how.startswith("ctrl-c"):
            os.killpg(p.pid, signal.SIGINT)  # as a terminal sends it: to every process of the group
            if how == "ctrl-c twice":
                time.sleep(0.01)  # two quick presses: the second lands while the first is handled
                os.killpg(p.pid, signal.SIGINT)
        elif how == "sigterm":
            p.terminate()
        else:
            p.kill()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if how.startswith("ctrl-c"):
        assert p.returncode == 130
        assert err.decode().strip() == "interrupted"
    elif how == "sigterm":  # as a service manager or timeout stops it: quietly, 128 + 15
        assert p.returncode == 143
        assert err == b""
    else:
        assert p.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _spawned_workers() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _spawned_workers() <= before


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_stray_companion_is_reported_at_its_place(folder, tmp_path, capfd, jobs):
    if int(jobs) > usable_cores():
        pytest.skip("two worker processes need two cores")
    lone = tmp_path / "lone.uv.png"
    last = tmp_path / "last.uv.png"
    for p in (lone, last):
        cv2.imwrite(str(p), np.zeros((8, 8), np.uint8))
    # folder[1] is the cut-short file: its error, then the stray one given after it, then the
    # one given last, after every image.
    argv = [*folder[:2], str(lone), *folder[2:], str(last)]
    assert main(["detect", "--mm-per-px", "0.5", "--json", "--jobs", jobs, *argv]) == 1
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 3
    assert "f9_cut.jpg" in err[0] and "lone.uv.png" in err[1] and "last.uv.png" in err[2]


def test_pools_put_the_sigterm_handler_back_in_any_order():
    import signal
    import threading

    before = signal.getsignal(signal.SIGTERM)
    a, b = WorkerPool(1), WorkerPool(1)  # no work given: no process started
    a.close()
    assert signal.getsignal(signal.SIGTERM) is not before  # b still open: a SIGTERM exits through it
    b.close()
    assert signal.getsignal(signal.SIGTERM) == before
    # Closed from another thread (a generator freed there): the handler cannot be put back
    # from it, and acts as the one before it would.
    c = WorkerPool(1)
    t = threading.Thread(target=c.close)
    t.start()
    t.join()
    from scallop import workers

    assert workers._term_pools == 0  # so the handler left behind no longer turns SIGTERM into an exit of ours
    signal.signal(signal.SIGTERM, before)


@two_cores
def test_worker_processes_give_the_belt_millimetres_of_a_calibration_alike(folder, capfd):
    from pathlib import Path

    cal = Path(__file__).resolve().parents[1] / "docs" / "examples" / "genicam-fake" / "calibration.json"
    recs = {}
    for jobs in ("1", "2"):
        rc = main(["detect", "--calibration", str(cal), "--json", "--jobs", jobs, *folder])
        out, err = capfd.readouterr()
        assert rc == 1 and err.count("error:") == 1  # the cut-short file
        recs[jobs] = [json.loads(ln) for ln in out.splitlines()]
    assert recs["1"] == recs["2"]
    assert any("center_mm" in s for r in recs["2"] for s in r["scallops"])


def test_a_symlink_loop_among_the_images_is_that_images_error_only(folder, tmp_path, capfd):
    loop = tmp_path / "self.jpg"
    loop.symlink_to(loop)
    assert main(["detect", "--mm-per-px", "0.5", "--json", str(loop), folder[0]]) == 1
    out, err = capfd.readouterr()
    assert [json.loads(ln)["image"] for ln in out.splitlines()] == [folder[0]]
    assert "self.jpg" in err and len(err.splitlines()) == 1 and "internal error" not in err


def test_annotate_never_writes_over_an_image_given(folder, tmp_path, capfd):
    src = tmp_path / "a.jpg"
    shutil.copy(folder[0], src)
    victim = tmp_path / "a_det.png"  # an image given, named as a's annotation would be
    cv2.imwrite(str(victim), cv2.imread(folder[2]))
    before = victim.read_bytes()
    assert main(["detect", "--mm-per-px", "0.5", "--annotate", str(tmp_path), str(src), str(victim)]) == 1
    err = capfd.readouterr().err
    assert victim.read_bytes() == before
    assert "a_det.png" in err and "not written over" in err
    assert (tmp_path / "a_det_det.png").is_file()  # the other one was written


def test_an_annotated_image_cut_short_by_a_full_disk_is_removed(folder, tmp_path, capfd, monkeypatch):
    import errno
    from pathlib import Path

    def half_then_full(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    out_dir = tmp_path / "ann"
    out_dir.mkdir()
    assert main(["detect", "--mm-per-px", "0.5", "--annotate", str(out_dir), folder[0]]) == 1
    assert "No space left on device" in capfd.readouterr().err
    assert list(out_dir.iterdir()) == []


def test_of_two_companions_in_other_letter_case_the_first_in_name_order_is_taken(tmp_path, monkeypatch):
    (tmp_path / "h.jpg").write_bytes(b"x")
    for name in ("h.uv.PNG", "h.UV.png"):
        (tmp_path / name).write_bytes(b"x")
    real = os.scandir

    class Reversed:  # a disk that lists the folder the other way round
        def __init__(self, p):
            self._it = real(p)
            self._entries = sorted(self._it, key=lambda e: e.name, reverse=True)

        def __enter__(self):
            return iter(self._entries)

        def __exit__(self, *a):
            self._it.close()

    for listing in (real, Reversed):
        monkeypatch.setattr(os, "scandir", listing)
        assert companion_path(tmp_path / "h.jpg").name == "h.UV.png"  # "U" sorts before "u"


def test_unusable_images_and_strays_keep_the_order_given():
    """Strays at one place keep their order whatever their messages say (they were sorted by
    text once an unusable image was taken out), and each unusable image is said where its
    turn would have come."""
    paths = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    stray = [(1, "z stray"), (1, "b stray"), (3, "y stray")]
    kept, said = detect._without(paths, {"b.jpg": "b broken", "c.jpg": "c broken"}, stray)
    assert kept == ["a.jpg", "d.jpg"]
    assert said == [(1, "z stray"), (1, "b stray"), (1, "b broken"), (1, "c broken"), (1, "y stray")]
