"""A robot side written from docs/robot-interface.md alone, for testing the controller against
something it did not write. It imports nothing of ``scallop`` (a test checks): every address,
code and rule below comes from the document, and where the document was silent it was fixed
first.

* :class:`DocRobot` — the robot program (sections 3–6 and 9): the registers of the generic
  profile at any offset (``base=128`` is the UR map), the handshake, the start rule, both
  heartbeats and the watchdog (with a ``watchdog_ms`` rewritten at any time), RESET, and the
  PICK motion as section 6 and the reference programs describe it (free moves with a
  trapezoidal profile at the commanded speed, the late rule, the chained take at the release).
  Its defaults are the reference URScript program's: a = 3000 mm/s², 60 ms opening, one 8 ms
  control cycle after each free move. Time is ``clock.now()``, evaluated lazily at each
  request, so a virtual clock gives the same run every time.
* Faults of the robot: :meth:`DocRobot.press_estop`, :meth:`~DocRobot.release_estop`,
  :meth:`~DocRobot.inject_fault`, :meth:`~DocRobot.restart` (with fresh or kept registers).
* :class:`RawModbusServer` — Modbus TCP with functions 3 and 16 only, on a bare socket, with
  faults of the link on any request: each exception code (the write performed or not), a lost
  reply, a late reply, a dropped request; and the whole server going away (:meth:`down`),
  coming back (:meth:`up`) or accepting connections without ever answering (``mute``).

Everything the robot did is logged for the tests: ``taken`` (every command it copied, with
its target id), ``ready_at`` (when it became able to pick again after a restart or a RESET),
``commits`` (when each new ``cmd_seq`` was written).
"""

from __future__ import annotations

import math
import socket
import struct
import threading
import time

U32 = 1 << 32
# Section 3, offsets from the profile's first register.
VERSION, HEARTBEAT, STATE, FAULT, ACK, DONE, RESULT = 0, 1, 2, 3, 4, 5, 6
ARM_MS, TCP_X, PICKS = 8, 10, 16
CTRL_HB, WATCHDOG, CMD_SEQ = 20, 21, 22
CMD = 24  # cmd_type; the block runs to 82
TARGET, GRIP_MS = 26, 28
WAYPOINTS = ("approach", "grasp", "grip_end", "pull_end", "chute", "ready")
WP_ADDR = {w: 36 + 8 * i for i, w in enumerate(WAYPOINTS)}  # x, y, z (int32 0.01 mm), then speed
STATUS, CONTROL, COMMAND = range(0, 18), range(20, 23), range(24, 83)
# Codes (section 3).
STARTING, IDLE, BUSY, FAULTED, ESTOP = 0, 1, 2, 3, 4
F_NONE, F_WATCHDOG, F_ESTOP = 0, 1, 2
R_NONE, R_OK, R_EMPTY, R_LATE, R_REJECTED, R_ABORTED, R_NOT_READY = 0, 1, 2, 3, 4, 5, 6
PICK, MOVE_READY, RESET, PICK_CHAINED = 1, 2, 3, 4


def trapezoid_s(d: float, v: float, a: float) -> float:
    """Rest to rest over ``d`` mm at top speed ``v`` and acceleration ``a``."""
    if d <= 0:
        return 0.0
    if d >= v * v / a:
        return d / v + v / a
    return 2.0 * math.sqrt(d / a)


def dist(p, q) -> float:
    return math.dist(p, q)


class DocRobot:
    def __init__(
        self,
        clock,
        base: int = 0,
        accel_mm_s2: float = 3000.0,
        open_s: float = 0.06,
        settle_s: float = 0.008,
        poll_s: float = 0.008,
        limits=((50.0, 800.0), (-500.0, 500.0), (-30.0, 450.0)),
        start_mm=(300.0, 0.0, 100.0),
    ) -> None:
        self.clock = clock
        self.base = base
        self.accel, self.open_s, self.settle_s, self.poll_s = accel_mm_s2, open_s, settle_s, poll_s
        self.limits = limits
        self.lock = threading.RLock()
        self.r = [0] * 83
        self.pos = tuple(start_mm)
        self.estop_pressed = False
        self.taken: list[dict] = []  # every command copied: seq, type, target, t, result, t_grip
        self.ready_at: list[float] = []
        self.commits: list[tuple[float, int, int]] = []  # (time, new cmd_seq, cmd_type in the block)
        self.wd_changed_t = -math.inf
        self.wd_prev = 0
        self.program_start_t: float | None = None  # a restart whose program has not started yet
        self._start_program(clock.now())
        self.ready_at = []  # the first start is no recovery

    # ------------------------------------------------------------------ program start (section 5)
    def _start_program(self, now: float) -> None:
        self.program_start_t = None
        self.boot = now
        self.r[VERSION] = 2
        self.state = STARTING
        s = self.r[CMD_SEQ]
        self.r[ACK] = self.r[DONE] = s  # never run what was committed before
        self.r[RESULT] = 0
        self.picks = 0
        self.hb_last = self.r[CTRL_HB]
        self.hb_changed_t: float | None = None  # watchdog not armed
        self.cmd_t = -math.inf
        self.ex: dict | None = None
        self.free_since = now
        self.state, self.fault = IDLE, F_NONE
        self.ready_at.append(now)
        self._publish(now)

    # ------------------------------------------------------------------ clock and registers
    def ms(self, t: float) -> int:
        return int(math.floor((t - self.boot) * 1000.0 + 1e-6)) % U32

    def u32(self, a: int) -> int:
        return (self.r[a] << 16) | self.r[a + 1]

    def i32(self, a: int) -> int:
        v = self.u32(a)
        return v - U32 if v >= 1 << 31 else v

    def _set_i32(self, a: int, v: int) -> None:
        v &= 0xFFFFFFFF
        self.r[a], self.r[a + 1] = v >> 16, v & 0xFFFF

    def waypoint(self, name: str) -> tuple[float, float, float]:
        a = WP_ADDR[name]
        return (self.i32(a) / 100.0, self.i32(a + 2) / 100.0, self.i32(a + 4) / 100.0)

    def speed(self, name: str) -> float:
        return float(self.r[WP_ADDR[name] + 6])

    def _watchdog_s(self, value: int) -> float:
        return (value or 1000) / 1000.0

    def _publish(self, now: float) -> None:
        if self.program_start_t is not None:
            return  # no program: nobody writes the status block
        self.r[HEARTBEAT] = int((now - self.boot) / 0.05) & 0xFFFF  # every 50 ms
        self.r[STATE], self.r[FAULT] = self.state, self.fault
        self._set_i32(ARM_MS, self.ms(now))
        p = self.position(now)
        for i in range(3):
            self._set_i32(TCP_X + 2 * i, int(round(p[i] * 100)))
        self._set_i32(PICKS, self.picks)

    # ------------------------------------------------------------------ motion (section 6)
    def position(self, t: float):
        ex = self.ex
        if ex is None:
            return self.pos
        for t0, t1, a, b in ex["segs"]:
            if t <= t1:
                if t <= t0 or t1 <= t0:
                    return a
                f = (t - t0) / (t1 - t0)
                return tuple(a[i] + (b[i] - a[i]) * f for i in range(3))
        return ex["segs"][-1][3] if ex["segs"] else self.pos

    def _inside(self, p) -> bool:
        return all(lo <= v <= hi for v, (lo, hi) in zip(p, self.limits))

    def _take(self, t: float) -> None:
        """Copy the block, acknowledge, then validate and execute (sections 5 and 9)."""
        seq = self.r[CMD_SEQ]
        ctype = self.r[CMD]
        wp = {w: self.waypoint(w) for w in WAYPOINTS}
        sp = {w: self.speed(w) for w in WAYPOINTS}
        grip_ms = self.u32(GRIP_MS)
        target = self.u32(TARGET)
        self.r[ACK] = seq
        rec = {"seq": seq, "type": ctype, "target": target, "t": t, "result": None, "t_grip": None, "t_release": None}
        self.taken.append(rec)

        def finish_now(result: int) -> None:
            rec["result"] = result
            self.r[RESULT], self.r[DONE] = result, seq

        if self.state in (FAULTED, ESTOP):
            if ctype == RESET and not self.estop_pressed and self._heartbeat_alive(t):
                self.state, self.fault = IDLE, F_NONE
                finish_now(R_OK)
                self.ready_at.append(t)
            else:
                finish_now(R_REJECTED if ctype == RESET else R_NOT_READY)
            return
        if ctype == RESET:
            finish_now(R_OK)
            return
        used = WAYPOINTS if ctype in (PICK, PICK_CHAINED) else ("ready",) if ctype == MOVE_READY else None
        if used is None or any(not self._inside(wp[w]) or sp[w] <= 0 for w in used):
            finish_now(R_REJECTED)
            return
        segs: list = []

        def free(t0, a, b, v):
            t1 = t0 + trapezoid_s(dist(a, b), v, self.accel)
            segs.append((t0, t1, a, b))
            segs.append((t1, t1 + self.settle_s, b, b))
            return t1 + self.settle_s

        def line(t0, a, b, v):
            t1 = t0 + dist(a, b) / v
            segs.append((t0, t1, a, b))
            return t1

        self.state = BUSY
        ex = {"rec": rec, "segs": segs, "release": None, "result": R_OK}
        if ctype == MOVE_READY:
            ex["done"] = free(t, self.pos, wp["ready"], sp["ready"])
            self.ex = ex
            return
        t_app = free(t, self.pos, wp["approach"], sp["approach"])
        # grip_time_ms on our clock, the wrap nearest to now
        base_ms = (t - self.boot) * 1000.0
        k = round((base_ms - grip_ms) / U32)
        t_grip = self.boot + (grip_ms + k * U32) / 1000.0
        t_desc = t_grip - dist(wp["approach"], wp["grasp"]) / sp["grasp"]
        if t_app - t_desc > 0.005:  # late rule: do not descend
            ex["done"] = free(t_app, wp["approach"], wp["ready"], sp["ready"])
            ex["result"] = R_LATE
            self.ex = ex
            return
        t_ds = max(t_app, t_desc)
        segs.append((t_app, t_ds, wp["approach"], wp["approach"]))
        t_g = line(t_ds, wp["approach"], wp["grasp"], sp["grasp"])
        rec["t_grip"] = t_g
        t_ge = line(t_g, wp["grasp"], wp["grip_end"], sp["grip_end"])
        t_pe = line(t_ge, wp["grip_end"], wp["pull_end"], sp["pull_end"])
        t_ch = free(t_pe, wp["pull_end"], wp["chute"], sp["chute"])
        segs.append((t_ch, t_ch + self.open_s, wp["chute"], wp["chute"]))
        ex["release"] = rec["t_release"] = t_ch + self.open_s
        ex["done"] = free(ex["release"], wp["chute"], wp["ready"], sp["ready"])
        self.ex = ex

    def _finish(self, t: float, result: int) -> None:
        ex = self.ex
        rec = ex["rec"]
        rec["result"] = result
        self.pos = self.position(t)
        if rec["type"] in (PICK, PICK_CHAINED) and result in (R_OK, R_EMPTY):
            self.picks += 1
        self.r[RESULT], self.r[DONE] = result, rec["seq"]  # result first
        self.ex = None
        if self.state == BUSY:
            self.state = IDLE
        self.free_since = t

    def _abort(self, t: float, state: int, fault: int) -> None:
        if self.ex is not None:
            if self.ex["rec"]["t_grip"] is not None and self.ex["rec"]["t_grip"] > t:
                self.ex["rec"]["t_grip"] = None  # stopped before it reached the uro
            self._finish(t, R_ABORTED)
        self.state, self.fault = state, fault
        self.free_since = t

    def _heartbeat_alive(self, t: float) -> bool:
        return self.hb_changed_t is not None and t - self.hb_changed_t <= self._watchdog_s(self.r[WATCHDOG])

    def _watchdog_due(self) -> float:
        """When the controller heartbeat's watchdog fires (inf: not armed or already stopped).
        The robot applies the watchdog_ms it reads on each cycle (section 4)."""
        if self.hb_changed_t is None or self.state in (FAULTED, ESTOP) or self.program_start_t is not None:
            return math.inf
        t_old = self.hb_changed_t + self._watchdog_s(self.wd_prev)
        if t_old <= self.wd_changed_t:
            return t_old
        return max(self.hb_changed_t + self._watchdog_s(self.r[WATCHDOG]), self.wd_changed_t)

    def advance(self, now: float) -> None:
        """Everything due up to ``now``, in time order."""
        while True:
            if self.program_start_t is not None:
                if self.program_start_t > now:
                    break
                self._start_program(self.program_start_t)
            cands = [(self._watchdog_due(), "watchdog")]
            ex = self.ex
            if ex is not None:
                pending = self.r[CMD_SEQ] not in (0, self.r[ACK])
                if (
                    ex["release"] is not None
                    and pending
                    and self.cmd_t <= ex["release"]
                    and self.r[CMD] == PICK_CHAINED
                ):
                    cands.append((ex["release"], "chain"))
                cands.append((ex["done"], "done"))
            elif self.r[CMD_SEQ] not in (0, self.r[ACK]):
                cands.append((max(self.cmd_t + self.poll_s, self.free_since), "take"))
            t, kind = min(cands)
            if t > now:
                break
            if kind == "watchdog":
                self._abort(t, FAULTED, F_WATCHDOG)
            elif kind == "chain":
                # Section 6, step 8: done at the release, the chained pick is taken from here.
                ex["segs"][:] = [s for s in ex["segs"] if s[0] < t]
                self._finish(t, R_OK)
                self._take(t)
            elif kind == "done":
                self._finish(t, ex["result"])
            else:
                self._take(t)
        self._publish(now)

    # ------------------------------------------------------------------ Modbus access
    def read(self, address: int, count: int) -> list[int] | int:
        with self.lock:
            a = address - self.base
            if count < 1 or not all(x in STATUS or x in CONTROL or x in COMMAND for x in range(a, a + count)):
                return 2  # ILLEGAL DATA ADDRESS
            self.advance(self.clock.now())
            return self.r[a : a + count]

    def write(self, address: int, values: list[int]) -> int | None:
        with self.lock:
            a = address - self.base
            if not values or not all(x in CONTROL or x in COMMAND for x in range(a, a + len(values))):
                return 2
            now = self.clock.now()
            self.advance(now)
            old_hb, old_seq, old_wd = self.r[CTRL_HB], self.r[CMD_SEQ], self.r[WATCHDOG]
            self.r[a : a + len(values)] = values
            if self.r[CTRL_HB] != old_hb:
                self.hb_changed_t = now  # arms the watchdog on its first change
            if self.r[CMD_SEQ] != old_seq:
                self.cmd_t = now
                self.commits.append((now, self.r[CMD_SEQ], self.r[CMD]))
            if self.r[WATCHDOG] != old_wd:
                self.wd_prev, self.wd_changed_t = old_wd, now
            self.advance(now)
            return None

    # ------------------------------------------------------------------ faults of the robot
    def press_estop(self) -> None:
        with self.lock:
            now = self.clock.now()
            self.advance(now)
            self.estop_pressed = True
            self._abort(now, ESTOP, F_ESTOP)
            self._publish(now)

    def release_estop(self) -> None:
        with self.lock:
            self.estop_pressed = False  # the arm stays in ESTOP until a RESET

    def inject_fault(self, code: int) -> None:
        with self.lock:
            now = self.clock.now()
            self.advance(now)
            self._abort(now, FAULTED, code)
            self._publish(now)

    def restart(self, fresh_registers: bool, start_after_s: float = 0.0) -> None:
        """The program starts again (section 5, Restarts): a motion under way simply stops;
        with ``fresh_registers`` the controller rebooted and every register is 0;
        ``start_after_s``: the program runs only that much later (the server answers before)."""
        with self.lock:
            now = self.clock.now()
            self.advance(now)
            if self.ex is not None:
                self.pos = self.position(now)
                rec = self.ex["rec"]
                rec["result"] = "cut by restart"
                if rec["t_grip"] is not None and rec["t_grip"] > now:
                    rec["t_grip"] = None
                self.ex = None
            if fresh_registers:
                self.r = [0] * 83
                self.wd_prev, self.wd_changed_t = 0, -math.inf
            self.state = STARTING
            self.r[STATE] = STARTING
            self.hb_changed_t = None
            self.program_start_t = now + start_after_s
            self.advance(now)

    # ------------------------------------------------------------------ for the tests
    def picks_taken(self) -> list[dict]:
        return [x for x in self.taken if x["type"] in (PICK, PICK_CHAINED)]

    def moved_targets(self) -> list[int]:
        """Targets of the picks it started moving for (not refused at once)."""
        return [x["target"] for x in self.picks_taken() if x["result"] not in (R_REJECTED, R_NOT_READY)]

    def gripped_targets(self) -> list[int]:
        """Targets it reached and closed the gripper on."""
        return [x["target"] for x in self.picks_taken() if x["t_grip"] is not None]


class RawModbusServer:
    """Modbus TCP with functions 3 and 16 only, written against the protocol specification,
    with faults of the link.

    ``inject(what, kind, code=0, n=1)``: the next ``n`` requests that match ``what`` — a
    register offset the request covers (``CMD`` the command block, ``CMD_SEQ`` the commit,
    ``CTRL_HB``, ``WATCHDOG``, ``STATUS_READ``) — get ``kind``:

    * ``"exception"``: not performed, answered with exception ``code``;
    * ``"exception_applied"``: performed, then answered with exception ``code`` (a gateway
      that lost the arm's answer);
    * ``"lost"``: performed, never answered (the connection stays open);
    * ``"late"``: performed, answered ``late_s`` later (after the client gave up);
    * ``"dropped"``: not performed, the connection closed without an answer.
    """

    STATUS_READ = -1

    def __init__(self, robot: DocRobot, late_s: float = 0.4) -> None:
        self.robot = robot
        self.late_s = late_s
        self.mute = False  # accept connections, never answer
        self.faults: list[list] = []  # [what, kind, code, n_left]
        self.injected: list[tuple[int, str, int]] = []  # what was done, for the tests
        self.log: list[tuple[int, int, int, str]] = []  # every request: function, offset, count, fault
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.port = 0
        self.sock: socket.socket | None = None
        self.up()

    # ------------------------------------------------------------------ lifecycle
    def up(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        s.settimeout(0.05)
        self.port = s.getsockname()[1]
        self.sock = s
        self.stop.clear()
        t = threading.Thread(target=self._accept, args=(s,), name="docrobot-accept", daemon=True)
        t.start()
        self.threads.append(t)

    def down(self) -> None:
        """The server goes away: nothing listens, every connection is cut."""
        self.stop.set()
        for c in list(self.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(2)
        self.threads = [t for t in self.threads if t.is_alive()]
        self.conns = []
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        self.down()

    def inject(self, what: int, kind: str, code: int = 0, n: int = 1) -> None:
        with self.lock:
            self.faults.append([what, kind, code, n])

    def _fault_for(self, fc: int, a: int, n: int) -> tuple[str, int] | None:
        with self.lock:
            for f in self.faults:
                what, kind, code, left = f
                hit = (fc == 3 and what == self.STATUS_READ and a == 0) or (
                    fc == 16 and what >= 0 and a <= what < a + n
                )
                if hit and left > 0:
                    f[3] -= 1
                    if f[3] == 0:
                        self.faults.remove(f)
                    self.injected.append((what, kind, code))
                    return kind, code
        return None

    # ------------------------------------------------------------------ serving
    def _accept(self, s: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                c, _ = s.accept()
            except OSError:
                continue
            self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), name="docrobot-conn", daemon=True)
            t.start()
            self.threads.append(t)

    def _recv(self, c: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                raise ConnectionError
            buf += chunk
        return buf

    def _serve(self, c: socket.socket) -> None:
        c.settimeout(0.05)
        try:
            while not self.stop.is_set():
                try:
                    tid, _proto, length, unit = struct.unpack(">HHHB", self._recv(c, 7))
                    pdu = self._recv(c, length - 1)
                except TimeoutError:
                    continue
                if self.mute:
                    continue
                body, late = self._answer(pdu)
                if body is None:
                    continue  # lost: never answered
                if late and self.stop.wait(self.late_s):
                    break
                c.sendall(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
        except (ConnectionError, OSError):
            pass
        finally:
            c.close()

    def _answer(self, pdu: bytes) -> tuple[bytes | None, bool]:
        """The answer to one request (None: none is sent) and whether it goes out late."""
        rb = self.robot
        fc = pdu[0]
        if fc == 3:
            addr, n = struct.unpack(">HH", pdu[1:5])
            kind, code = self._fault_for(fc, addr - rb.base, n) or ("", 0)
        elif fc == 16:
            addr, n, nbytes = struct.unpack(">HHB", pdu[1:6])
            vals = list(struct.unpack(f">{n}H", pdu[6 : 6 + nbytes]))
            kind, code = self._fault_for(fc, addr - rb.base, n) or ("", 0)
        else:
            return bytes([fc | 0x80, 1]), False  # ILLEGAL FUNCTION
        self.log.append((fc, addr - rb.base, n, kind))
        if kind == "exception":
            return bytes([fc | 0x80, code]), False
        if kind == "dropped":
            raise ConnectionError
        res = rb.read(addr, n) if fc == 3 else rb.write(addr, vals)
        if kind == "exception_applied":
            return bytes([fc | 0x80, code]), False
        if kind == "lost":
            return None, False
        if isinstance(res, int):
            body = bytes([fc | 0x80, res])
        elif fc == 3:
            body = bytes([fc, 2 * n]) + struct.pack(f">{n}H", *res)
        else:
            body = bytes([fc]) + struct.pack(">HH", addr, n)
        return body, kind == "late"


def wait_until(cond, timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()
