"""Independent work items over worker processes, results in the order given.

``scallop detect`` over a large folder analyses images side by side this way (and ``scallop
bench vision`` times it so): one image per process, each network run on one thread. Threads
would share one interpreter, and the pipeline is many small numpy and OpenCV calls, most of
which hold the GIL; a second thread of it ran at about 60 % here, a second process at 100 %.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from scallop.errors import ScallopError


class WorkerDiedError(ScallopError):
    """A worker process ended without a result (killed, out of memory): the items from the one
    it was on are not done."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which a container or ``taskset`` narrows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


#: What one worker may hold: measured 140 MB resident with both shipped models loaded and a
#: 1280x720 frame analysed; a 1920x1080 frame, its fluorescence frame and its annotated
#: picture add tens of MB more. Reserved generously: a worker killed for memory loses its images.
WORKER_MEMORY_MB = 300
#: The share of the memory available now that the workers chosen by default may take: the
#: line's own processes (the screen, the record, the arms) keep the rest.
AUTO_MEMORY_SHARE = 0.5


def available_memory_mb() -> float | None:
    """Memory this process could still take, in MB: the kernel's ``MemAvailable``, or less
    where a control group (a container, a systemd slice) limits it; None where neither can be
    read (not Linux)."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) / 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    left = _cgroup_memory_left()
    if left is not None:
        found.append(left / 2**20)
    return max(0.0, min(found)) if found else None


_PROC_CGROUP = "/proc/self/cgroup"
_CGROUP_ROOT = "/sys/fs/cgroup"


def _cgroup_memory_left() -> int | None:
    """Bytes the memory control groups of this process may still take, None without a limit:
    for each limit on its group or a group above it (a container's, a systemd slice's), the
    limit less what that group holds, page cache the kernel would drop first not counted (a
    folder of images read fills it); the least of them. cgroup v2 (``memory.max``) or v1
    (``memory.limit_in_bytes``, its ``memory.stat`` giving the limits above); inside a
    container the group's own folder is the mount's root, not the path the process file names."""
    try:
        with open(_PROC_CGROUP, encoding="ascii") as f:
            entries = [ln.rstrip("\n").split(":", 2) for ln in f]
    except OSError:
        return None
    left: list[int] = []
    for hid, controllers, path in (e for e in entries if len(e) == 3):
        if hid == "0" and controllers == "":
            left += _v2_left(path)
        elif "memory" in controllers.split(","):
            left += _v1_left(path)
    return max(0, min(left)) if left else None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _stat(path: str) -> dict[str, int]:
    try:
        with open(path, encoding="ascii") as f:
            return {k: int(v) for k, v in (ln.split() for ln in f if len(ln.split()) == 2)}
    except (OSError, ValueError):
        return {}


def _v2_left(path: str) -> list[int]:
    """What each limited group from this one up to the mount's root leaves (cgroup v2)."""
    # The path as named, then (inside a container, where the group is the mount's root) the root.
    for base in (_CGROUP_ROOT + path.rstrip("/"), _CGROUP_ROOT):
        if _read_int(f"{base}/memory.current") is None:
            continue
        out, here = [], base
        while True:
            limit, used = _read_int(f"{here}/memory.max"), _read_int(f"{here}/memory.current")
            if limit is not None and used is not None:
                out.append(limit - (used - _stat(f"{here}/memory.stat").get("inactive_file", 0)))
            if here == _CGROUP_ROOT:
                return out
            here = here.rsplit("/", 1)[0]
    return []


def _v1_left(path: str) -> list[int]:
    """What the group's limit, or a limit above it, leaves (cgroup v1: ``memory.stat`` gives
    the least limit of the hierarchy, and the cache to leave out)."""
    root = f"{_CGROUP_ROOT}/memory"
    for base in (root + path.rstrip("/"), root):
        used = _read_int(f"{base}/memory.usage_in_bytes")
        if used is None:
            continue
        st = _stat(f"{base}/memory.stat")
        limits = [v for v in (_read_int(f"{base}/memory.limit_in_bytes"), st.get("hierarchical_memory_limit")) if v]
        limit = min(limits) if limits else None
        # A page-rounded 2**63: no limit.
        if limit is None or limit >= 2**60:
            return []
        return [limit - (used - st.get("total_inactive_file", 0))]
    return []


def memory_jobs(share: float = 1.0) -> int | None:
    """How many workers ``share`` of the memory available now holds (at least 1); None when
    the available memory cannot be read."""
    mb = available_memory_mb()
    return None if mb is None else max(1, int(mb * share // WORKER_MEMORY_MB))


def check_jobs(key: str, value: object) -> int:
    """A number of worker processes: 1 up to the cores this process may use, and no more than
    the memory available holds (``WORKER_MEMORY_MB`` each). More would only share the same
    cores, each holding the models in memory; past the memory, the system swaps or kills one."""
    from scallop.errors import ConfigError, check_number

    cores = usable_cores()
    note = f" (the cores this process may use: {cores}; more processes than cores only share them)"
    jobs = int(check_number(key, value, 1, cores, integer=True, note=note))
    mb = available_memory_mb()
    fits = None if mb is None else int(mb // WORKER_MEMORY_MB)
    if fits is not None and jobs > max(1, fits):
        holds = f"holds {fits} worker(s)" if fits else "holds not one worker"
        raise ConfigError(
            f"{key}={jobs}: the memory available now ({mb:.0f} MB) {holds} of about {WORKER_MEMORY_MB} MB each: "
            f"give --jobs {max(1, fits)}{' or fewer' if fits > 1 else ''}, or free memory"
        )
    return jobs


def _end_with_parent(parent: int) -> None:
    """Have the kernel end this process when its parent (pid ``parent``) dies (Linux). A worker
    waits on a queue whose other end it holds itself, so a parent killed outright would leave it
    waiting for ever, holding a model's memory. (The kernel watches the parent's thread that
    started the worker: the pool hands out work, and so starts its workers, from the thread
    that calls :meth:`WorkerPool.map`.)"""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # no prctl: the worker then ends with the pool's shutdown only
        return
    if os.getppid() != parent:  # the parent died before the call above took effect
        os._exit(1)


def _start(parent: int, init: Callable | None, args: tuple) -> None:
    import cv2

    # Ctrl-C is the parent's to handle. Workers start with it blocked (_QuietSpawn); ignored
    # too, where a platform did not carry the block over.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent(parent)
    # Each process is one lane: OpenCV's own pool in every one would oversubscribe the cores.
    cv2.setNumThreads(1)
    if init is not None:
        init(*args)


class _QuietProcess(mp.get_context("spawn").Process):  # type: ignore[misc]
    def start(self) -> None:
        # A terminal's Ctrl-C goes to every process of the group, these too, and a Python still
        # starting up prints a traceback for it. Blocked while the process is made, SIGINT stays
        # blocked in it (the mask is inherited), and arrives here afterwards if one came.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _QuietSpawn(type(mp.get_context("spawn"))):  # type: ignore[misc]
    Process = _QuietProcess


# SIGTERM while any pool is open: an exit that unwinds through the pools' close() (see
# WorkerPool). One handler for all the pools of the process, counted, so that pools closed in
# any order, or from another thread, leave the handler found before the first one.
_term_lock = threading.Lock()
_term_pools = 0
_term_before: object = None


def _terminated(signum, frame):
    if _term_pools > 0:
        raise SystemExit(128 + signum)
    # Every pool closed, but the handler could not be put back (closed from another thread):
    # do what the handler before it would have done.
    before = _term_before
    if callable(before):
        before(signum, frame)
    elif before != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _hold_term() -> bool:
    global _term_pools, _term_before
    if threading.current_thread() is not threading.main_thread():
        return False  # only the main thread may set a handler; the pool works without it
    with _term_lock:
        if _term_pools == 0 and signal.getsignal(signal.SIGTERM) is not _terminated:
            _term_before = signal.signal(signal.SIGTERM, _terminated)
        _term_pools += 1
    return True


def _release_term() -> None:
    global _term_pools
    with _term_lock:
        _term_pools -= 1
        if _term_pools == 0 and _term_before is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _term_before)  # (None: set outside Python; ours then acts as default)


class WorkerPool:
    """``jobs`` worker processes kept between calls of :meth:`map` (a benchmark times them warm).
    ``initializer(*initargs)`` runs once in each. Use as a context manager, or :meth:`close`."""

    def __init__(self, jobs: int, initializer: Callable | None = None, initargs: tuple = ()):
        self.jobs = jobs
        # spawn, not fork: a forked child can inherit a locked OpenCV or onnxruntime thread pool.
        self._ex = ProcessPoolExecutor(
            jobs, mp_context=_QuietSpawn(), initializer=_start, initargs=(os.getpid(), initializer, initargs)
        )
        # A SIGTERM (a service manager, ``timeout``) would end this process on the spot and leave
        # the pool's queues to the resource tracker, which then warns of leaked semaphores;
        # as an exit it unwinds through close() instead. Put back when the last pool closes.
        self._holds_term = _hold_term()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(now=exc_type is not None)

    def close(self, now: bool = False) -> None:
        """Stop the processes: after their work (the default), or ``now`` (an error, Ctrl-C, a
        SIGTERM: what they are on is thrown away, and waiting for it could be cut short by a
        second Ctrl-C, leaving the pool half shut and the exit waiting for ever)."""
        # Already stopping: a second Ctrl-C (two quick presses) is not let through to cut the
        # stop short. Killing the processes takes no waiting, so nothing is left to interrupt.
        quiet = now and threading.current_thread() is threading.main_thread()
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if quiet else None
        try:
            if now:
                procs = getattr(self._ex, "_processes", None) or {}  # the executor has no public handle
                for p in list(procs.values()):
                    p.kill()
            self._ex.shutdown(wait=True, cancel_futures=True)
        finally:
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            if self._holds_term:
                self._holds_term = False
                _release_term()

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        """``fn(item)`` for each item, in order (``fn`` and the items must pickle: a
        module-level function and plain data). At most two items per process are handed out
        ahead of the one the caller waits for, so a long input is not queued whole and a caller
        that stops early leaves little work behind. What ``fn`` raises is raised here at its
        item; a process that dies raises :class:`WorkerDiedError`."""
        pending: deque = deque()
        done = 0

        def died() -> WorkerDiedError:
            return WorkerDiedError(
                f"a worker process ended unexpectedly (killed, out of memory, or it could not start) after "
                f"{done} item(s) done"
            )

        it = iter(items)
        end = object()

        def submit_next() -> bool:
            item = next(it, end)
            if item is end:
                return False
            pending.append(self._ex.submit(fn, item))
            return True

        try:
            try:
                while len(pending) < 2 * self.jobs and submit_next():
                    pass
            except BrokenProcessPool:
                raise died() from None
            while pending:
                try:
                    result = pending.popleft().result()
                except BrokenProcessPool:
                    raise died() from None
                broken = False
                try:
                    submit_next()
                except BrokenProcessPool:
                    broken = True  # this result still counts; the items after it do not get done
                done += 1
                yield result
                if broken:
                    raise died()
        finally:
            for f in pending:
                f.cancel()


def ordered_map(
    fn: Callable, items: Iterable, jobs: int, initializer: Callable | None = None, initargs: tuple = ()
) -> Iterator:
    """:meth:`WorkerPool.map` on a pool of ``jobs`` processes opened for it and closed after."""
    with WorkerPool(jobs, initializer, initargs) as pool:
        yield from pool.map(fn, items)
