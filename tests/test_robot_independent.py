"""The controller against a robot side written from docs/robot-interface.md alone, on a
raw-socket Modbus TCP server (no pymodbus on the server side): the controller must not depend
on anything the document does not say."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from scallop.robot.arm import ArmClient, ArmState, FaultCode, ResultCode
from scallop.robot.config import ArmConfig, TransportConfig
from scallop.robot.errors import ModbusExceptionError
from scallop.robot.planning import ConveyorTracker, PickPlan, PickPlanner, PickTarget
from scallop.sim.clock import VirtualClock

V, MPC = 300.0, 0.1


class DocRobot:
    """Generic profile, section 5 and 9 of the document; the release is 0.3 s after the grip
    and the arm is back at ready 0.1 s later."""

    STATUS = range(0, 18)
    WRITABLE = (range(20, 23), range(24, 83))

    def __init__(self, clock) -> None:
        self.clock = clock
        self.r = [0] * 83
        self.t0 = clock.now()
        self.r[0] = 2  # interface_version
        self.ack = self.r[4] = self.r[5] = self.r[22]  # start rule: nothing old is executed
        self.state = 1
        self.fault = 0
        self.busy_until = None
        self.release_at = None
        self.busy_seq = 0
        self.busy_result = 0
        self.last_hb = None
        self.hb_changed = None
        self.executed: list[int] = []
        self.taken_ms: dict[int, int] = {}
        self.lock = threading.Lock()

    def ms(self) -> int:
        return int((self.clock.now() - self.t0) * 1000) % (1 << 32)

    def u32(self, a: int) -> int:
        return (self.r[a] << 16) | self.r[a + 1]

    def finish(self, seq: int, result: int) -> None:
        self.r[6] = result
        self.r[5] = seq
        if self.state == 2:
            self.state = 1

    def tick(self) -> None:
        now_ms = self.ms()
        hb = self.r[20]
        if hb != self.last_hb:
            if self.last_hb is not None:
                self.hb_changed = now_ms
            self.last_hb = hb
        wd = self.r[21] or 1000
        if self.hb_changed is not None and now_ms - self.hb_changed > wd and self.state in (1, 2):
            if self.state == 2:
                self.finish(self.busy_seq, 5)  # ABORTED
                self.busy_until = None
            self.state, self.fault = 3, 1
        if self.busy_until is not None and self.release_at is not None and now_ms >= self.release_at:
            self.release_at = None
            pending = self.r[22]
            if pending != 0 and pending != self.ack and self.r[24] == 4:
                self.busy_until = None  # section 6 step 8: a PICK_CHAINED is waiting
                self.finish(self.busy_seq, self.busy_result)
        if self.busy_until is not None and now_ms >= self.busy_until:
            self.busy_until = None
            self.finish(self.busy_seq, self.busy_result)
        seq = self.r[22]
        if self.busy_until is None and seq != 0 and seq != self.ack:
            block = list(self.r[24:83])  # copy, then acknowledge
            self.ack = self.r[4] = seq
            ctype = block[0]
            if self.state == 3:
                if ctype == 3 and self.hb_changed is not None and now_ms - self.hb_changed <= wd:
                    self.state, self.fault = 1, 0
                    self.finish(seq, 1)
                else:
                    self.finish(seq, 6 if ctype != 3 else 4)
            elif ctype in (1, 4):
                grip = (block[4] << 16) | block[5]
                self.executed.append(seq)
                self.taken_ms[seq] = now_ms
                self.state, self.busy_seq, self.busy_result = 2, seq, 1
                self.release_at = max(now_ms, grip) + 300
                self.busy_until = self.release_at + 100
            elif ctype in (2, 3):
                self.finish(seq, 1)
            else:
                self.finish(seq, 4)
        self.r[1] = (now_ms // 50) & 0xFFFF  # heartbeat every 50 ms
        self.r[2], self.r[3] = self.state, self.fault
        self.r[8], self.r[9] = now_ms >> 16, now_ms & 0xFFFF

    def read(self, a: int, n: int):
        with self.lock:
            if a < 0 or a + n > 83:
                return 2
            self.tick()
            return self.r[a : a + n]

    def write(self, a: int, vals: list[int]):
        with self.lock:
            if not any(all(x in rng for x in range(a, a + len(vals))) for rng in self.WRITABLE):
                return 2
            self.tick()
            self.r[a : a + len(vals)] = vals
            self.tick()
            return None


class RawModbusTcpServer:
    """Modbus TCP with functions 3 and 16 only, written against the protocol specification."""

    def __init__(self, robot: DocRobot) -> None:
        self.robot = robot
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
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
        c.settimeout(0.2)
        while not self.stop.is_set():
            try:
                tid, proto, length, unit = struct.unpack(">HHHB", self._recv(c, 7))
                pdu = self._recv(c, length - 1)
            except TimeoutError:
                continue
            except (ConnectionError, OSError):
                break
            fc = pdu[0]
            if fc == 3:
                addr, n = struct.unpack(">HH", pdu[1:5])
                res = self.robot.read(addr, n)
                body = (
                    (bytes([fc, 2 * n]) + struct.pack(f">{n}H", *res))
                    if isinstance(res, list)
                    else bytes([fc | 0x80, res])
                )
            elif fc == 16:
                addr, n, nbytes = struct.unpack(">HHB", pdu[1:6])
                vals = list(struct.unpack(f">{n}H", pdu[6 : 6 + nbytes]))
                err = self.robot.write(addr, vals)
                body = bytes([fc]) + struct.pack(">HH", addr, n) if err is None else bytes([fc | 0x80, err])
            else:
                body = bytes([fc | 0x80, 1])
            try:
                c.sendall(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
            except OSError:
                break
        c.close()

    def close(self) -> None:
        self.stop.set()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(2)
        self.sock.close()


@pytest.fixture
def setup():
    clock = VirtualClock()
    robot = DocRobot(clock)
    server = RawModbusTcpServer(robot)
    cfg = ArmConfig(transport=TransportConfig(host="127.0.0.1", port=server.port, timeout_s=1.0))
    client = ArmClient(cfg, clock)
    yield clock, robot, server, client
    client.close()
    server.close()
    assert not any(t.is_alive() for t in server.threads)


def plan_now(cfg, clock, tid=1, x=600.0, t_free=None, chained=False) -> PickPlan:
    tr = ConveyorTracker(MPC)
    for dt in (-0.1, 0.0):
        tr.update(clock.now() + dt, int(round(V * (clock.now() + dt) / MPC)))
    plan = PickPlanner(cfg).plan(
        PickTarget(tid, (x, 0.0), int(round(V * clock.now() / MPC)), (0.0, 1.0), z_mm=5.0),
        tr,
        clock.now() if t_free is None else t_free,
        chained=chained,
    )
    assert isinstance(plan, PickPlan)
    return plan


def test_controller_drives_an_independent_robot_side(setup):
    clock, robot, server, client = setup
    st = client.connect()
    assert st.state == ArmState.IDLE and robot.r[21] == 1000  # watchdog_ms written on connect
    plan = plan_now(client.config, clock)
    seq = client.submit(plan)
    assert client.wait_for(seq, "acked").seq == seq
    done = client.wait_for(seq, "done")
    assert done.result == ResultCode.OK
    # The robot saw the grip time on its own clock, to the millisecond.
    assert robot.u32(28) == pytest.approx((plan.grip_time - robot.t0) * 1000, abs=1.0)
    assert robot.executed == [seq]
    # Writing the same seq again is not a new command.
    client.transport.write(22, [seq])
    for _ in range(5):
        client.poll()
        clock.sleep(0.1)
    assert robot.executed == [seq]
    with pytest.raises(ModbusExceptionError, match=r"exception 2 \(ILLEGAL DATA ADDRESS\)"):
        client.transport.write(4, [7])


def test_independent_robot_watchdog_and_reset(setup):
    clock, robot, server, client = setup
    client.connect()
    for _ in range(3):
        client.poll()
        clock.sleep(0.1)
    clock.advance(1.5)
    st = client.read_status()
    assert (st.state, st.fault_code) == (ArmState.FAULT, FaultCode.CTRL_WATCHDOG)
    client.poll()  # heartbeat back
    assert client.wait_for(client.reset_fault(), "done").result == ResultCode.OK
    assert client.read_status().state == ArmState.IDLE
    seq = client.submit(plan_now(client.config, clock, tid=2))
    assert client.wait_for(seq, "done").result == ResultCode.OK


def test_independent_robot_takes_a_chained_pick_at_the_release(setup):
    clock, robot, server, client = setup
    client.connect()
    a = client.submit(plan_now(client.config, clock, tid=1))
    client.wait_for(a, "acked")
    grip_a = robot.u32(28)
    b = client.submit(plan_now(client.config, clock, tid=2, x=300.0, t_free=clock.now() + 0.5, chained=True))
    assert robot.r[24] == 4  # cmd_type PICK_CHAINED
    assert client.wait_for(a, "done").result == ResultCode.OK
    client.wait_for(b, "acked")
    # Taken at the release (grip + 300 ms, within a poll), not after the return to ready (+400 ms).
    assert grip_a + 300 <= robot.taken_ms[b] < grip_a + 400
    assert robot.executed == [a, b]
