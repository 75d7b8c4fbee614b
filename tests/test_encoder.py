"""The belt encoder over Modbus (robot/belt.py) and the camera that stamps frames with it
(scallop/app/frames.py).

Every encoder test talks to a real pymodbus server on 127.0.0.1 whose counter is a function of
a test clock. The clock only moves while the sampler is held between two requests
(``EncodedCamera.sampling_paused``), so each sample is exactly the counter at its stamp and
the expected counts below are exact numbers, not tolerances.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from scallop.app.config import ConfigError, EncoderSection, load_config, to_dict
from scallop.app.frames import EncodedCamera
from scallop.errors import DeviceError
from scallop.robot.belt import (
    CounterUnwrapper,
    EncoderError,
    EncoderGapError,
    EncoderModbusError,
    EncoderNotConnectedError,
    EncoderNotFoundError,
    EncoderStalledError,
    EncoderTimeoutError,
    ModbusEncoder,
    ModbusEncoderConfig,
)
from scallop.vision.camera import (
    CameraNotConnectedError,
    CameraNotFoundError,
    OpenCVCamera,
    OpenCVCameraConfig,
)
from tests.helpers import free_port

HZ = 200.0  # sampler rate in these tests (wall time)
TIMEOUT_S = 0.05


class ManualClock:
    """The line's clock in a test: moves only when the test says."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class CounterServer:
    """A PLC with a belt counter on a real Modbus TCP server.

    ``value(t)`` is the unbounded count at clock time t; the registers hold it modulo
    2**(16*words), high word first for word_order="big". Only the function of ``register``
    is answered (a read with the other one gets "illegal function"). ``silent_s`` > 0 delays
    every answer (an encoder that stopped answering in time).
    """

    def __init__(self, clock, value, *, address=100, words=2, word_order="big", register="holding"):
        self.clock, self.value = clock, value
        self.address, self.words, self.word_order = address, words, word_order
        self.fc = 3 if register == "holding" else 4
        self.silent_s = 0.0
        self.requests = 0
        self._loop = None
        self._thread = None
        self._server = None

    async def _action(self, fc, start, address, count, current, set_values):
        from pymodbus.constants import ExcCodes

        if self.silent_s > 0:
            await asyncio.sleep(self.silent_s)
        self.requests += 1
        if fc != self.fc:
            return ExcCodes.ILLEGAL_FUNCTION
        raw = int(self.value(self.clock())) % (1 << (16 * self.words))
        words = [raw & 0xFFFF] if self.words == 1 else [raw >> 16, raw & 0xFFFF]
        if self.word_order == "little":
            words.reverse()
        off = self.address - start
        current[off : off + self.words] = words
        return None

    def start(self) -> CounterServer:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        ready = threading.Event()

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main():
                dev = SimDevice(
                    id=1,
                    simdata=[SimData(self.address, count=self.words, values=0, datatype=DataType.REGISTERS)],
                    action=self._action,
                )
                self._server = ModbusTcpServer(dev, address=("127.0.0.1", 0))
                await self._server.serve_forever(background=True)

            loop.run_until_complete(main())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._server.shutdown())
            # Requests still held by silent_s would be destroyed pending: end them cleanly.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="test-counter-server", daemon=True)
        self._thread.start()
        assert ready.wait(10), "counter server did not start"
        return self

    @property
    def port(self) -> int:
        return int(self._server.transport.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def config(self, **kw) -> ModbusEncoderConfig:
        base = {
            "host": "127.0.0.1",
            "port": self.port,
            "address": self.address,
            "words": self.words,
            "word_order": self.word_order,
            "register": "holding" if self.fc == 3 else "input",
            "timeout_s": TIMEOUT_S,
            "sample_hz": HZ,
        }
        base.update(kw)
        return ModbusEncoderConfig(**base)


@pytest.fixture
def servers():
    """Start counter servers with ``servers(clock, value, **kw)``; all are closed afterwards."""
    made: list[CounterServer] = []

    def make(clock, value, **kw) -> CounterServer:
        s = CounterServer(clock, value, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def cameras():
    """EncodedCameras built through this fixture are disconnected afterwards, even on failure."""
    made: list[EncodedCamera] = []

    def make(*a, **kw) -> EncodedCamera:
        c = EncodedCamera(*a, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.disconnect()


@pytest.fixture
def image_folder(tmp_path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(12):
        img = np.full((24, 32, 3), 20 * i, np.uint8)
        assert cv2.imwrite(str(d / f"f{i:03d}.png"), img)
    return d


def folder_camera(folder: Path, clock) -> OpenCVCamera:
    return OpenCVCamera(OpenCVCameraConfig(source=str(folder), loop=True), clock=clock)


class NoCamera(OpenCVCamera):
    """A camera that is never read: count_at() is tested on its own."""

    def __init__(self) -> None:
        super().__init__(OpenCVCameraConfig(source="unused"))

    def connect(self) -> None:
        self._connected = True


def step_to(cam: EncodedCamera, clock: ManualClock, t: float, wait: bool = True) -> None:
    """Move the clock between two samples; with wait, until the sampler has read at t."""
    with cam.sampling_paused():
        clock.t = t
    if not wait:
        return
    deadline = time.monotonic() + 3.0
    while (cam.newest_sample() or (-1.0,))[0] < t:
        assert time.monotonic() < deadline, f"no encoder sample at t={t} within 3 s"
        time.sleep(0.001)


# ============================================================================ config
def test_config_messages_name_the_field_and_range():
    with pytest.raises(ValueError, match=r"^sample_hz=0 is out of range: allowed 10\.\.5000$"):
        ModbusEncoderConfig(host="plc", sample_hz=0)
    with pytest.raises(ValueError, match=r"^host is empty"):
        ModbusEncoderConfig()
    with pytest.raises(ValueError, match=r"^port=0 is out of range: allowed 1\.\.65535$"):
        ModbusEncoderConfig(host="plc", port=0)
    with pytest.raises(ValueError, match=r"^words=3 is not allowed: choose one of 1, 2$"):
        ModbusEncoderConfig(host="plc", words=3)
    with pytest.raises(ValueError, match=r"^register='coil' is not allowed: choose one of 'input', 'holding'$"):
        ModbusEncoderConfig(host="plc", register="coil")
    with pytest.raises(ValueError, match=r"^word_order='middle' is not allowed"):
        ModbusEncoderConfig(host="plc", word_order="middle")
    with pytest.raises(ValueError, match=r"^timeout_s=0 is out of range: allowed 0\.01\.\.5$"):
        ModbusEncoderConfig(host="plc", timeout_s=0)
    with pytest.raises(ValueError, match=r"^latency_s=2\.0 is out of range: allowed -0\.5\.\.1$"):
        ModbusEncoderConfig(host="plc", latency_s=2.0)
    with pytest.raises(ValueError, match=r"^address=65535 with words=2 runs past register 65535$"):
        ModbusEncoderConfig(host="plc", address=65535)
    with pytest.raises(ValueError, match=r"^buffer_s=0\.5 must be longer than \|latency_s\|"):
        ModbusEncoderConfig(host="plc", latency_s=0.5, buffer_s=0.5)
    cfg = ModbusEncoderConfig(host="plc", address=100, words=1, register="input")
    assert cfg.bits == 16
    assert cfg.describe() == "modbus plc:502 device 1 input register 100"


def test_line_config_encoder_section(tmp_path):
    assert load_config(None).camera.encoder.source == "none"
    # The section and the encoder's own config must not drift apart.
    section = to_dict(EncoderSection())
    assert section.pop("source") == "none"
    assert section == {**to_dict(ModbusEncoderConfig(host="x")), "host": ""}

    good = tmp_path / "good.toml"
    good.write_text(
        '[camera]\nsource = "0"\n[camera.encoder]\nsource = "modbus"\nhost = "192.168.10.5"\n'
        'address = 100\nregister = "input"\nwords = 1\nsample_hz = 500\nlatency_s = 0.012\n'
    )
    enc = load_config(good).camera.encoder.modbus_config()
    assert (enc.host, enc.port, enc.address, enc.register, enc.words, enc.sample_hz, enc.latency_s) == (
        "192.168.10.5",
        502,
        100,
        "input",
        1,
        500.0,
        0.012,
    )

    cases = {
        'source = "modbus"\nhost = "plc"\nsample_hz = 0': "camera.encoder: sample_hz=0.0 is out of range: allowed 10..5000",
        'source = "modbus"': "camera.encoder: host is empty",
        'source = "serial"': "camera.encoder.source='serial' is not allowed: choose one of 'none', 'modbus'",
        'source = "modbus"\nhost = "plc"\nregister = "coil"': "camera.encoder.register='coil' is not allowed: choose one of 'input', 'holding'",
        'source = "modbus"\nhost = "plc"\nsampl_hz = 100': "camera.encoder.sampl_hz: unknown key",
        'source = "modbus"\nhost = "plc"\nwords = "2"': "camera.encoder.words='2': expected an integer",
    }
    for body, message in cases.items():
        p = tmp_path / "bad.toml"
        p.write_text(f'[camera]\nsource = "0"\n[camera.encoder]\n{body}\n')
        with pytest.raises(ConfigError) as e:
            load_config(p)
        assert str(e.value).startswith(f"{p}: {message}"), str(e.value)
    p = tmp_path / "sim.toml"
    p.write_text('[camera.encoder]\nsource = "modbus"\nhost = "plc"\n')
    with pytest.raises(ConfigError, match=r"simulator's frames carry its own encoder"):
        load_config(p)


# ============================================================================ unwrapping
def test_unwrapper_numbers():
    u = CounterUnwrapper(16)
    assert [u.update(r) for r in (65530, 65535, 4, 10, 65534)] == [65530, 65535, 65540, 65546, 65534]
    s = CounterUnwrapper(16, signed=True)
    assert [s.update(r) for r in (65535, 0, 32767, 32768, 2)] == [-1, 0, 32767, 32768, 2]
    w = CounterUnwrapper(32)
    assert [w.update(r) for r in (2**32 - 3, 5, 2**31 + 4)] == [2**32 - 3, 2**32 + 5, 2**32 + 2**31 + 4]
    with pytest.raises(ValueError, match="bits=8"):
        CounterUnwrapper(8)


@pytest.mark.parametrize(
    "words,word_order,register,signed,start,rate",
    [
        (1, "big", "holding", False, 65_000, 20_000.0),  # 16-bit counter rolls over 65535 -> 0
        (1, "big", "input", True, 32_000, 20_000.0),  # signed 16-bit: 32767 -> -32768
        (1, "big", "holding", False, 300, -20_000.0),  # belt reversing through 0
        (2, "big", "input", False, 2**32 - 1_000, 20_000.0),  # 32-bit rolls over
        (2, "little", "holding", True, -500, 20_000.0),  # signed 32-bit through 0, low word first
    ],
)
def test_counter_rollover_is_unwrapped(servers, words, word_order, register, signed, start, rate):
    clock = ManualClock()
    srv = servers(clock, lambda t: start + round(rate * t), words=words, word_order=word_order, register=register)
    # Unwrapping is the point here, not the timeout: a loaded 2-core CI machine once let the first
    # answer of a fresh server take longer than the 0.05 s the timeout tests use.
    enc = ModbusEncoder(srv.config(signed=signed, timeout_s=1.0))
    enc.connect()
    try:
        got, want = [], []
        for k in range(30):
            clock.t = k * 0.005  # 100 counts a step, 3000 in all
            got.append(enc.read())
            want.append(start + round(rate * clock.t))
    finally:
        enc.disconnect()
    assert got == want
    assert enc.requests == 31 and enc.failures == 0  # 30 reads plus the one in connect()


# ============================================================================ errors
def test_dead_server_is_a_typed_error_naming_it(cameras, image_folder):
    port = free_port()
    cfg = ModbusEncoderConfig(host="127.0.0.1", port=port, address=100, timeout_s=TIMEOUT_S, sample_hz=HZ)
    cam = cameras(folder_camera(image_folder, ManualClock()), ModbusEncoder(cfg))
    with pytest.raises(EncoderNotFoundError) as e:
        cam.connect()
    assert str(e.value) == (
        f"encoder modbus 127.0.0.1:{port} device 1 holding register 100..101: "
        "cannot connect (refused, unreachable or no such host)"
    )
    # The CLI prints device errors as one line, and the line's frame reader treats them as camera alarms.
    assert isinstance(e.value, EncoderError) and isinstance(e.value, DeviceError)
    assert not cam.is_connected and not cam.sampler_running and not cam.camera.is_connected
    with pytest.raises(CameraNotConnectedError, match="read\\(\\) before connect\\(\\)"):
        cam.read()


def test_exception_responses_name_the_code(servers):
    clock = ManualClock()
    srv = servers(clock, lambda t: 7, register="input")
    with pytest.raises(EncoderModbusError) as e:
        ModbusEncoder(srv.config(register="holding")).connect()
    assert e.value.code == 1
    assert "exception 1 (illegal function) to function 3; check address, register kind and device_id" in str(e.value)
    with pytest.raises(EncoderModbusError) as e:
        ModbusEncoder(srv.config(address=101)).connect()
    assert e.value.code == 2 and "(illegal data address)" in str(e.value)
    enc = ModbusEncoder(srv.config())
    with pytest.raises(EncoderNotConnectedError):
        enc.read()
    with enc:
        assert enc.read() == 7


def test_no_answer_is_a_timeout_and_the_next_read_reconnects(servers):
    clock = ManualClock()
    srv = servers(clock, lambda t: 1000 + round(1000 * t))
    enc = ModbusEncoder(srv.config())
    with enc:
        srv.silent_s = 0.3
        t0 = time.monotonic()
        with pytest.raises(EncoderTimeoutError, match=r"holding register 100\.\.101: no answer within 0\.05 s$"):
            enc.read()
        assert time.monotonic() - t0 < 0.25
        srv.silent_s = 0.0
        clock.t = 0.5
        assert enc.read() == 1500  # fresh socket: the late answer is not taken for this one


# ============================================================================ interpolation
def test_counts_are_interpolated_between_the_samples_around_the_exposure(servers, cameras):
    clock = ManualClock()
    # A belt that changes speed: 3000 counts/s up to t=0.01, then 1000 counts/s.
    knots_t, knots_c = [0.0, 0.01, 0.02, 1.0], [1000.0, 1030.0, 1040.0, 2020.0]
    srv = servers(clock, lambda t: round(float(np.interp(t, knots_t, knots_c))))
    cam = cameras(NoCamera(), ModbusEncoder(srv.config()), clock=clock, run_sampler=False)
    cam.connect()  # first sample at t=0
    for t in (0.01, 0.02, 0.03):
        clock.t = t
        cam.sample()
    np.testing.assert_array_equal(cam.samples(), [[0.0, 1000], [0.01, 1030], [0.02, 1040], [0.03, 1050]])
    assert cam.count_at(0.004) == 1012  # 1000 + 30 * 0.4
    assert cam.count_at(0.01) == 1030  # on a sample
    assert cam.count_at(0.015) == 1035  # between the two slower samples, not 1045
    assert cam.count_at(0.028) == 1048
    assert cam.count_at(0.03) == 1050
    # The sample stamp: a repeated read at the same clock time is not kept twice.
    cam.sample()
    assert len(cam.samples()) == 4

    with pytest.raises(EncoderGapError) as e:
        cam.count_at(-0.02)
    # The frame reader skips such a frame with a warning (test_encoder_errors_are_device_errors…).
    assert "0.020 s before the oldest encoder sample kept" in str(e.value)

    # Samples 0.2 s apart (a long outage) are not interpolated across.
    clock.t = 0.23
    cam.sample()
    with pytest.raises(EncoderGapError, match=r"no encoder sample for 0\.200 s around the exposure at t=0\.1000"):
        cam.count_at(0.1)
    assert cam.count_at(0.23) == 1250  # 1040 + 1000 * 0.21

    # Nothing after the exposure and no sampler: stalled, after the bounded wait.
    t0 = time.monotonic()
    with pytest.raises(EncoderStalledError) as e:
        cam.count_at(0.3)
    waited = time.monotonic() - t0
    assert cam.max_wait_s == pytest.approx(TIMEOUT_S + 2 / HZ)
    assert cam.max_wait_s - 0.005 <= waited < cam.max_wait_s + 0.5
    assert str(e.value).endswith(
        "encoder stalled: no count at or after the exposure at t=0.3000 within 0.060 s "
        "(the newest sample is 0.070 s older; sampler not running)"
    )


def test_buffer_keeps_buffer_s_of_history(servers, cameras):
    clock = ManualClock()
    srv = servers(clock, lambda t: round(100 * t))
    cam = cameras(NoCamera(), ModbusEncoder(srv.config(sample_hz=10, buffer_s=0.5)), clock=clock, run_sampler=False)
    cam.connect()
    for k in range(1, 21):
        clock.t = k * 0.1
        cam.sample()
    s = cam.samples()
    assert s.shape == (7, 2)  # ceil(0.5 s * 10 Hz) + 2
    assert s[0, 0] == pytest.approx(1.4) and s[-1, 0] == pytest.approx(2.0)
    with pytest.raises(EncoderGapError):
        cam.count_at(1.3)


# ============================================================================ the thread
def test_sampler_thread_runs_and_stops_on_disconnect(servers, image_folder):
    clock = ManualClock()
    srv = servers(clock, lambda t: round(1000 * t))
    cam = EncodedCamera(folder_camera(image_folder, clock), ModbusEncoder(srv.config()), clock=clock)
    with cam:
        names = [t.name for t in threading.enumerate()]
        assert any(n.startswith("encoder-sampler-modbus 127.0.0.1") for n in names), names
        assert cam.sampler_running
        before = srv.requests
        time.sleep(0.1)
        # ~20 reads in 0.1 s at 200 Hz; loose bounds for a busy machine.
        assert 3 <= srv.requests - before <= 40
    assert not cam.sampler_running and not cam.is_connected and not cam.camera.is_connected
    assert not any(t.name.startswith("encoder-sampler") for t in threading.enumerate())
    cam.disconnect()  # twice is fine
    with pytest.raises(CameraNotConnectedError):
        cam.read()


def test_camera_failure_on_connect_leaves_nothing_running(servers, tmp_path):
    clock = ManualClock()
    srv = servers(clock, lambda t: 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    cam = EncodedCamera(folder_camera(empty, clock), ModbusEncoder(srv.config()), clock=clock)
    with pytest.raises(CameraNotFoundError, match="folder holds no images"):
        cam.connect()
    assert not cam.sampler_running and not cam.encoder.is_connected


def test_end_to_end_folder_camera_frames_carry_the_counter_at_exposure(servers, cameras, image_folder):
    """16-bit counter at 2000 counts/s starting near its top, camera stamping frames 12.5 ms
    after exposure: every frame's count is the server's counter at its exposure, unwrapped."""
    clock = ManualClock(0.0)
    start, rate, latency = 65_000, 2000.0, 0.0125

    def counter(t: float) -> int:
        return start + round(rate * t)

    srv = servers(clock, counter, words=1)
    cam = cameras(folder_camera(image_folder, clock), ModbusEncoder(srv.config(latency_s=latency)), clock=clock)
    cam.connect()
    frames = []
    for k in range(1, 61):
        step_to(cam, clock, k * 0.005)
        if k % 6 == 0:
            frames.append(cam.read())
    got = [f.encoder for f in frames]
    # The frame's time is now its exposure: the stamp less the camera's latency.
    want = [counter(f.timestamp) for f in frames]
    assert got == want
    assert want[0] == 65_035 and want[-1] == 65_575  # past 65535: unwrapped
    assert [f.index for f in frames] == list(range(10))
    assert frames[0].timestamp == frames[0].extra["encoder_t"] == pytest.approx(0.03 - latency)


def test_read_waits_for_the_sample_after_the_exposure(servers, cameras, image_folder):
    clock = ManualClock(0.0)
    srv = servers(clock, lambda t: round(4000 * t))
    cam = cameras(folder_camera(image_folder, clock), ModbusEncoder(srv.config()), clock=clock)
    cam.connect()
    step_to(cam, clock, 0.25, wait=False)  # no sample at 0.25 yet: read() must wait for it
    f = cam.read()
    assert (f.timestamp, f.encoder) == (0.25, 1000)


def test_stalled_encoder_is_an_alarm_and_recovers(servers, cameras, image_folder):
    from scallop.app.alarms import Alarms
    from scallop.app.line.frames import FrameReader
    from scallop.app.stats import Stats

    clock = ManualClock(0.0)
    srv = servers(clock, lambda t: 500 + round(1000 * t))
    cam = cameras(folder_camera(image_folder, clock), ModbusEncoder(srv.config()), clock=clock)
    cam.connect()
    step_to(cam, clock, 0.05)
    assert cam.read().encoder == 550

    srv.silent_s = 0.3  # answers come too late from now on
    deadline = time.monotonic() + 3.0
    while not isinstance(cam.last_error, EncoderTimeoutError):
        assert time.monotonic() < deadline, "the sampler never timed out"
        time.sleep(0.005)
    step_to(cam, clock, 0.1, wait=False)
    with pytest.raises(EncoderStalledError) as e:
        cam.read()
    assert "encoder stalled: no count at or after the exposure at t=0.1000" in str(e.value)
    assert "last error: encoder modbus 127.0.0.1" in str(e.value) and "no answer within 0.05 s" in str(e.value)

    # The line turns it into a critical alarm of the encoder's own, not a crash.
    alarms = Alarms()
    reader = FrameReader(cam, alarms, Stats(), clock, stall_alarm_s=2.0)
    assert reader.read() is None
    assert alarms.is_active("encoder.stalled") and not reader.usable
    alarm = alarms.visible()[0]
    assert alarm.severity == "critical" and alarm.text.startswith("belt encoder not answering: ")
    assert "encoder stalled" in alarm.text

    srv.silent_s = 0.0
    step_to(cam, clock, 0.2)
    frame = reader.read()
    assert frame is not None and frame.encoder == 700
    assert not alarms.is_active("encoder.stalled") and reader.usable


def test_hardware_backend_wraps_the_camera_when_an_encoder_is_configured(servers, image_folder, tmp_path):
    from scallop.app.backends import HardwareBackend
    from scallop.calibration.errors import CalibrationFileError

    srv = servers(ManualClock(), lambda t: 42)
    arm = {"name": "arm1", "transport": {"kind": "tcp", "host": "127.0.0.1", "port": free_port()}}
    cfg = load_config(
        None,
        {
            "camera": {
                "source": str(image_folder),
                "encoder": {
                    "source": "modbus",
                    "host": "127.0.0.1",
                    "port": srv.port,
                    "address": 100,
                    "timeout_s": TIMEOUT_S,
                    "sample_hz": HZ,
                },
            },
            "runtime": {"calibration": str(tmp_path / "missing.json")},
            "arms": [arm],
        },
    )
    backend = HardwareBackend(cfg)
    try:
        with pytest.raises(CalibrationFileError):  # no calibration file: opened up to there
            backend.open()
        assert isinstance(backend.camera, EncodedCamera) and backend.camera.sampler_running
        assert backend.camera.read().encoder == 42
    finally:
        backend.close()
    assert not backend.camera.sampler_running

    # An image folder (or a video file) alone carries no counts: the line refuses to pick from it.
    plain = HardwareBackend(
        load_config(
            None,
            {
                "camera": {"source": str(image_folder)},
                "runtime": {"calibration": str(tmp_path / "missing.json")},
                "arms": [arm],
            },
        )
    )
    with pytest.raises(ConfigError, match=r"is an image folder: its frames carry no belt counts") as e:
        plain.open()
    assert "scallop capture" in str(e.value) and plain.camera is None


def test_encoder_errors_are_device_errors_and_a_gap_only_skips_a_frame(cameras, servers, image_folder):
    from scallop.app.alarms import Alarms
    from scallop.app.line.frames import FrameReader
    from scallop.app.stats import Stats

    for cls in (EncoderError, EncoderStalledError, EncoderGapError, EncoderTimeoutError, EncoderModbusError):
        assert issubclass(cls, DeviceError)

    class GapCamera(OpenCVCamera):
        def read(self):
            raise EncoderGapError("encoder x: exposure before the oldest sample: frame skipped")

    alarms = Alarms()
    reader = FrameReader(GapCamera(OpenCVCameraConfig(source=str(image_folder))), alarms, Stats(), ManualClock(), 2.0)
    assert reader.read() is None and reader.bad == 1
    assert alarms.is_active("camera.corrupt") and reader.usable


def test_a_fluorescence_partner_without_a_count_gets_its_own_at_its_exposure(servers, cameras):
    """A recording with the channel replayed against a live counter (its counts not used): the
    partner exposure of alternate frames, 20 ms after its frame, is counted where it was taken,
    and stays uncounted (the line then drops the pair) when the counter has nothing there."""
    from scallop.vision.camera import Camera, Frame
    from scallop.vision.channels import ChannelExposure

    class Paired(Camera):
        resolution = (4, 4)

        def connect(self) -> None:
            self._connected = True

        def disconnect(self) -> None:
            self._connected = False

        def read(self) -> Frame:
            f = Frame(image=np.zeros((4, 4, 3), np.uint8), timestamp=0.25, encoder=None, index=0, source="t")
            f.timestamp_error_s = 0.0
            f.extra["fluorescence"] = ChannelExposure(np.zeros((4, 4), np.uint8), self.partner_t, None, 1)
            return f

    clock = ManualClock()
    srv = servers(clock, lambda t: round(4000 * t))
    inner = Paired()
    cam = cameras(inner, ModbusEncoder(srv.config(sample_hz=10, buffer_s=1.0)), clock=clock, run_sampler=False)
    cam.connect()
    for t in (0.1, 0.2, 0.3):
        clock.t = t
        cam.sample()
    inner.partner_t = 0.27
    f = cam.read()
    ex = f.extra["fluorescence"]
    assert (f.encoder, ex.encoder, ex.timestamp) == (1000, 1080, 0.27)
    inner.partner_t = 0.5  # after the newest sample, which never comes: not known, so not made up
    assert cam.read().extra["fluorescence"].encoder is None
