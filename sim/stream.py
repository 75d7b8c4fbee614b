"""The simulated camera as a live network stream: MJPEG over HTTP, on wall time.

What a free-running IP camera gives a line: frames at ``fps``, each exposed at its time,
rendered, JPEG-encoded and sent ``latency_s`` later (the camera's own pipeline delay), as a
``multipart/x-mixed-replace`` stream that OpenCV opens as ``http://127.0.0.1:PORT/stream.mjpg``.
Nothing tells the reader when a frame was exposed: it has to stamp frames itself, which is
what this stream is for (the camera path of ``scallop run`` with a real camera, without one).

Each client has its own queue (``queue_frames`` deep, oldest dropped), as a camera's send
buffer: a reader that stops reading finds a backlog when it comes back.

Faults: :meth:`SimStream.unplug` (connections closed, new ones refused) and :meth:`plug`
(serving again on the same port). ``exposures`` logs ``(frame number, exposure time)`` of
every frame rendered, for a test or benchmark to compare stamps with.
"""

from __future__ import annotations

import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from scallop.sim.world import SimWorld

BOUNDARY = b"scallopframe"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class SimStream:
    """``world`` must run on wall time (its clock's ``now()`` is ``time.monotonic()``)."""

    def __init__(
        self,
        world: SimWorld,
        fps: float = 10.0,
        latency_s: float = 0.05,
        quality: int = 90,
        host: str = "127.0.0.1",
        port: int = 0,
        queue_frames: int = 100,
    ) -> None:
        if not (0.5 <= fps <= 60) or not (0.0 <= latency_s <= 1.0):
            raise ValueError(f"fps={fps} (0.5..60) and latency_s={latency_s} (0..1): out of range")
        self.world = world
        self.fps, self.latency_s, self.quality = float(fps), float(latency_s), int(quality)
        self.host, self._port = host, port
        self.queue_frames = queue_frames
        self.exposures: list[tuple[int, float]] = []
        self.late = 0  # frames sent later than exposure + latency (the renderer fell behind)
        self._clients: set[queue.Queue] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._render_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}/stream.mjpg"

    # ------------------------------------------------------------------ serving
    def _handler(self):
        stream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/stream.mjpg":
                    self.send_error(404)
                    return
                q: queue.Queue = queue.Queue(maxsize=stream.queue_frames)
                with stream._lock:
                    stream._clients.add(q)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    while not stream._stop.is_set():
                        try:
                            jpg = q.get(timeout=0.5)
                        except queue.Empty:
                            continue
                        if jpg is None:  # unplugged
                            break
                        self.wfile.write(
                            b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                            b"Content-Length: " + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n"
                        )
                except OSError:
                    pass  # the reader went away
                finally:
                    with stream._lock:
                        stream._clients.discard(q)

        return Handler

    def plug(self) -> SimStream:
        """Start serving (again, on the same port)."""
        srv = _Server((self.host, self._port), self._handler())
        self._port = srv.server_address[1]
        self._server = srv
        self._serve_thread = threading.Thread(target=srv.serve_forever, name="sim-stream-http", daemon=True)
        self._serve_thread.start()
        return self

    def unplug(self) -> None:
        """The camera goes away: open streams end, new connections are refused."""
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        with self._lock:
            clients = list(self._clients)
        for q in clients:
            self._push(q, None)
        # Let the handlers see the end before the socket is reused.
        deadline = time.monotonic() + 2.0
        while self._clients and time.monotonic() < deadline:
            time.sleep(0.01)

    # ------------------------------------------------------------------ the camera
    @staticmethod
    def _push(q: queue.Queue, item) -> None:
        while True:
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                try:
                    q.get_nowait()  # the send buffer is full: the oldest frame is lost
                except queue.Empty:
                    pass

    def _render_loop(self) -> None:
        clock = self.world.clock
        t0 = clock.now()
        k = 0
        while not self._stop.is_set():
            t_exp = t0 + k / self.fps
            wait = t_exp - clock.now()
            if wait > 0 and self._stop.wait(wait):
                break
            image, _ = self.world.render(t_exp)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            wait = t_exp + self.latency_s - clock.now()
            if wait > 0:
                if self._stop.wait(wait):
                    break
            else:
                self.late += 1
            self.exposures.append((k, t_exp))
            if ok:
                jpg = buf.tobytes()
                with self._lock:
                    clients = list(self._clients)
                for q in clients:
                    self._push(q, jpg)
            k += 1

    def start(self) -> SimStream:
        self.plug()
        self._render_thread = threading.Thread(target=self._render_loop, name="sim-stream-render", daemon=True)
        self._render_thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.unplug()
        if self._render_thread is not None:
            self._render_thread.join(5)
            self._render_thread = None

    def __enter__(self) -> SimStream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _serve_in_child(conn, config, seed: int, t0: float, fps: float, latency_s: float, port: int) -> None:
    from scallop.robot.clock import SystemClock

    world = SimWorld(config, seed=seed, clock=SystemClock())
    world.t0 = t0  # the parent's world: the same scene at the same moments
    stream = SimStream(world, fps=fps, latency_s=latency_s, port=port).start()
    conn.send(stream.url)
    try:
        while True:
            cmd = conn.recv()
            if cmd == "close":
                break
            if cmd == "unplug":
                stream.unplug()
            elif cmd == "plug":
                stream.plug()
            conn.send(list(stream.exposures) if cmd == "exposures" else (stream.late if cmd == "late" else None))
    except EOFError:
        pass
    finally:
        stream.close()


class StreamProcess:
    """A :class:`SimStream` of ``world``'s scene served from a process of its own, as a real
    camera is a device of its own: the line's threads and the renderer do not share an
    interpreter, so the stream keeps its pace however busy the line is. Same interface as
    SimStream for what a rig needs (``url``, ``latency_s``, ``plug``, ``unplug``,
    ``exposures``, ``close``)."""

    def __init__(self, world: SimWorld, fps: float = 10.0, latency_s: float = 0.05, port: int = 0) -> None:
        self.world, self.fps, self.latency_s, self._port = world, fps, latency_s, port
        self.url = ""
        self._proc = None
        self._conn = None

    def start(self) -> StreamProcess:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # the parent runs threads: never fork it
        self._conn, child = ctx.Pipe()
        args = (child, self.world.config, self.world.seed, self.world.t0, self.fps, self.latency_s, self._port)
        self._proc = ctx.Process(target=_serve_in_child, args=args, name="sim-stream", daemon=True)
        self._proc.start()
        if not self._conn.poll(60):
            self.close()
            raise RuntimeError("the simulated camera stream did not start within 60 s")
        self.url = self._conn.recv()
        return self

    def _ask(self, cmd: str):
        self._conn.send(cmd)
        return self._conn.recv()

    def unplug(self) -> None:
        self._ask("unplug")

    def plug(self) -> StreamProcess:
        self._ask("plug")
        return self

    @property
    def exposures(self) -> list[tuple[int, float]]:
        return [tuple(e) for e in self._ask("exposures")]

    @property
    def late(self) -> int:
        return self._ask("late")

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self._conn.send("close")
        except OSError:
            pass
        if self._proc.pid is not None:
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._proc = None

    def __enter__(self) -> StreamProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
