"""``scallop doctor``: what a maintenance engineer checks on a line PC, one line each.

Every check says OK, WARN or FAIL, what it found, and for WARN and FAIL what to do. The checks
only look: an arm is asked for its status block, not sent a heartbeat or a command, and the
PLC's and the encoder's registers are only read, so the doctor may run beside the running
line. A camera is opened as the line opens it (a GenICam camera is set up with the configured
format, region, exposure and trigger): a camera the running line holds is usually refused to a
second program (reported with "whether the running line holds the device"), so its check
belongs to a stopped line.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from scallop.app.config import LineConfig
from scallop.errors import ConfigError, DataError, ScallopError

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CALIBRATION_WARN_DAYS = 180.0  # a calibration older than this is worth a drift check


@dataclass
class Check:
    name: str
    status: str
    found: str
    todo: str = ""

    def line(self) -> str:
        todo = f" — {self.todo}" if self.todo and self.status != OK else ""
        return f"{self.status:<4} {self.name}: {self.found}{todo}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- devices
def _first_frame(cam):
    """Connect ``cam`` (a device the line would open), read one frame, let it go."""
    try:
        cam.connect()
        return cam.read()
    finally:
        cam.disconnect()


def check_camera(cfg: LineConfig) -> Check:
    if cfg.camera.source == "sim":
        return Check("camera", OK, "the built-in simulator")
    from scallop.app.backends import colour_camera
    from scallop.robot.clock import SystemClock

    name = "GenICam camera" if cfg.camera.source == "genicam" else repr(cfg.camera.source)
    try:
        # The device the line opens (GenICam, a recording, or what OpenCV opens), not a guess.
        frame = _first_frame(colour_camera(cfg, SystemClock()))
    except ConfigError as e:  # the camera refused a setting: the cable is not the cause
        return Check("camera", FAIL, str(e), "fix [camera] / [camera.genicam] in the configuration (docs/cameras.md)")
    except (ScallopError, OSError) as e:
        return Check("camera", FAIL, str(e), "check the cable and power, or whether the running line holds the device")
    found = f"{name} gives {frame.width}x{frame.height} frames"
    mismatch = _calibrated_size_mismatch(cfg, (frame.width, frame.height))
    if mismatch:  # the line refuses to start on it
        return Check("camera", FAIL, f"{found}; {mismatch}", "set the camera's mode back, or calibrate this camera")
    return Check("camera", OK, found)


def _calibrated_size_mismatch(cfg: LineConfig, size: tuple[int, int]) -> str:
    """The calibration's words when it was made for another image size than ``size`` (as the
    line checks it at its start); "" when it fits or cannot be read (the calibration check
    says why)."""
    from scallop.calibration.errors import CalibrationError, CameraMismatchError
    from scallop.calibration.store import load_calibration

    if not cfg.runtime.calibration:
        return ""
    try:
        load_calibration(cfg.runtime.calibration, image_size=size, require=("intrinsics",), accept_redo=("intrinsics",))
    except CameraMismatchError as e:
        return str(e)
    except (CalibrationError, OSError, ValueError):
        return ""
    return ""


def check_configuration(cfg: LineConfig) -> Check | None:
    """What a real line refuses to start without, beyond each device (arms configured, belt
    counts for its frames, the PLC's address): as the line checks it. None on the simulator."""
    if cfg.is_simulated:
        return None
    from scallop.app.backends import HardwareBackend

    try:
        HardwareBackend(cfg).check_config()
    except ConfigError as e:
        return Check("configuration", FAIL, str(e), "complete the configuration (docs/configuration.md)")
    return Check("configuration", OK, "a real line's camera, arms and belt counts are configured")


def check_fluorescence_camera(cfg: LineConfig) -> Check | None:
    """The second camera of ``[camera.fluorescence]``: it delivers, one grey channel, at the size
    the calibration registered (another size is dropped pair by pair on the line)."""
    fl = cfg.camera.fluorescence
    if not fl.enabled:
        return None
    if cfg.camera.source == "sim":
        setup = "a second camera" if fl.setup == "second_camera" else "alternate strobed frames"
        return Check("fluorescence channel", OK, f"the simulator draws it ({setup})")
    from scallop.vision.recording import is_recording

    if is_recording(cfg.camera.source):
        # The line takes each frame's partner from the recording and never opens the device.
        from scallop.app.backends import check_recording_channel
        from scallop.vision.recording import RecordingError, read_description

        try:
            check_recording_channel(cfg)
            meta = read_description(cfg.camera.source)
        except RecordingError as e:
            return Check("fluorescence channel", FAIL, str(e), "record it again, or give another recording")
        except ScallopError as e:
            return Check("fluorescence channel", FAIL, str(e), "give the line the set-up the recording was made with")
        res = meta["fluorescence"].get("resolution")
        size = _registered_fluorescence_size(cfg) if fl.setup == "second_camera" else None
        if res and size is not None and tuple(res) != size:
            return Check(
                "fluorescence channel",
                FAIL,
                f"the recording's fluorescence frames are {res[0]}x{res[1]}, but the calibration registered "
                f"{size[0]}x{size[1]}: every pair would be dropped",
                "replay it with the calibration of the line that recorded it",
            )
        return Check("fluorescence channel", OK, f"from the recording: each frame's partner as taken ({fl.setup})")
    if fl.setup != "second_camera":
        # Alternate frames come from the colour camera (checked above), strobed by the PLC.
        return Check("fluorescence channel", OK, "alternate frames of the colour camera, its lights strobed by the PLC")
    from scallop.app.backends import fluorescence_camera
    from scallop.robot.clock import SystemClock

    name = "fluorescence camera"
    try:
        frame = _first_frame(fluorescence_camera(cfg, SystemClock()))
    except (ScallopError, OSError) as e:
        return Check(name, FAIL, str(e), "check its cable and power, or whether the running line holds the device")
    found = f"{fl.source!r} gives {frame.width}x{frame.height} frames"
    size = _registered_fluorescence_size(cfg)
    if size is not None and (frame.width, frame.height) != size:
        return Check(
            name,
            FAIL,
            f"{found}, but the calibration registered {size[0]}x{size[1]}: every pair would be dropped",
            "set the camera back to the calibrated mode, or redo 'scallop calibrate fluorescence'",
        )
    if frame.image.ndim == 3 and frame.image.shape[2] == 3:
        b, g, r = (frame.image[..., c] for c in range(3))
        if not (np.array_equal(b, g) and np.array_equal(g, r)):
            # The line takes its grey level; a colour camera behind a red filter still works,
            # but a colour sensor without the filter would see the UV light's glare.
            return Check(name, WARN, f"{found} in colour", "check that it is the monochrome camera behind its filter")
    return Check(name, OK, found)


def _registered_fluorescence_size(cfg: LineConfig) -> tuple[int, int] | None:
    """(w, h) of the fluorescence images the calibration file registered, None when it cannot
    be read (the calibration check says why)."""
    from scallop.calibration.errors import CalibrationError
    from scallop.calibration.store import load_calibration

    try:
        cal = load_calibration(
            cfg.runtime.calibration, require=("fluorescence",), accept_redo=cfg.runtime.accept_redo_calibration
        )
    except (CalibrationError, OSError, ValueError):
        return None
    size = cal.fluorescence_size
    return None if size is None else (int(size[0]), int(size[1]))


def check_encoder(cfg: LineConfig) -> Check | None:
    enc = cfg.camera.encoder
    if enc.source == "none":
        return None
    from scallop.robot.belt import EncoderError, ModbusEncoder

    e = ModbusEncoder(enc.modbus_config())
    try:
        e.connect()
        first = e.read()
        time.sleep(0.2)
        second = e.read()
        moved = "moving" if second != first else "not moving (belt stopped?)"
        return Check("belt encoder", OK, f"{e.name} reads {second} ({moved})")
    except EncoderError as err:
        return Check("belt encoder", FAIL, str(err), "check the PLC's network cable, address and register settings")
    finally:
        e.disconnect()


def check_arm(arm) -> Check:
    """Reads the arm's status block only: no heartbeat, no command."""
    from scallop.robot.errors import RobotDisconnectedError, RobotError
    from scallop.robot.protocol import ArmState, FaultCode
    from scallop.robot.registers import RegisterMap
    from scallop.robot.transport import ModbusTransport

    name = f"arm {arm.name}"
    try:
        rmap = RegisterMap.load(arm.profile)
        t = ModbusTransport(arm.transport, name=arm.name)
    except (RobotError, OSError) as e:
        return Check(name, FAIL, str(e), "fix the arm's profile or transport in the configuration")
    try:
        t.connect()
        b = rmap.block("status")
        v = rmap.decode_block("status", t.read(b.start, b.count))
    except RobotError as e:
        # The transport's own words end in "retrying in …" for the line, which does retry; the
        # doctor asks once, so it says what went wrong and nothing more.
        why = f"{t.where}: {t.last_error}" if isinstance(e, RobotDisconnectedError) and t.last_error else str(e)
        return Check(name, FAIL, why, "check the arm's power, network cable and that its robot program runs")
    finally:
        t.close()
    where = arm.transport.describe()
    version = int(v["interface_version"])
    if version != rmap.version:
        return Check(
            name,
            FAIL,
            f"{where}: interface version {version}, the profile {rmap.name!r} is version {rmap.version}",
            "load the robot program that matches this version (docs/robot-interface.md)",
        )
    state = ArmState(int(v["arm_state"])).name if int(v["arm_state"]) in ArmState._value2member_map_ else "?"
    if state in ("FAULT", "ESTOP"):
        fault = FaultCode(int(v["fault_code"])).name if int(v["fault_code"]) in FaultCode._value2member_map_ else "?"
        return Check(
            name, WARN, f"{where}: interface version {version}, {state} ({fault})", "clear the cause, then RESET"
        )
    return Check(name, OK, f"{where}: interface version {version}, {state}")


# ---------------------------------------------------------------------------- files
def check_plc(cfg: LineConfig) -> Check:
    """Reads the line PLC's status block only (docs/plc-interface.md): no heartbeat, no output."""
    from scallop.robot.plc import GateState, PlcClient, PlcError, PlcProtocolError

    plc = cfg.plc
    if plc is None or plc.transport is None:
        if cfg.is_simulated:
            return Check("line PLC", OK, "the simulator's")
        return Check(
            "line PLC",
            WARN,
            "no [plc]: scallops the arms do not pick are not diverted",
            "configure the line PLC (docs/plc-interface.md)",
        )
    try:
        client = PlcClient(plc)
    except ScallopError as e:
        return Check("line PLC", FAIL, str(e), "fix [plc] in the configuration")
    try:
        client.connect()
        st = client.poll()
    except PlcProtocolError as e:
        return Check("line PLC", FAIL, str(e), "load the PLC program that matches (docs/plc-interface.md)")
    except PlcError as e:
        return Check("line PLC", FAIL, str(e), "check the PLC's power and network cable")
    finally:
        client.close()
    where = plc.transport.describe()
    gate = GateState(st.gate_state).name
    found = f"{where}: safety circuit {'closed' if st.safety_ok else 'OPEN'}, gate {gate}"
    if not st.safety_ok or st.gate_state == GateState.FAULT:
        return Check("line PLC", WARN, found, "close the guards / clear the gate, then RESET")
    return Check("line PLC", OK, found)


def check_calibration(cfg: LineConfig, now: float) -> Check:
    if not cfg.runtime.calibration:
        if cfg.is_simulated:
            return Check("calibration", OK, "the simulator brings its own")
        return Check("calibration", FAIL, "no runtime.calibration", "calibrate the line (docs/calibration.md)")
    from scallop.app.backends import fluorescence_registration, line_calibration_checks, load_line_calibration
    from scallop.calibration.errors import CalibrationError

    path = cfg.runtime.calibration
    try:
        # As the line does at its start (the simulator's arms need no part of their own).
        cal = load_line_calibration(cfg, arms=not cfg.is_simulated)
        if not cfg.is_simulated:
            line_calibration_checks(cfg, cal)
        elif cfg.camera.fluorescence.setup == "second_camera":
            # At the configured height, which may need the pose (the simulator registers its own).
            fluorescence_registration(cal, cfg.camera.fluorescence)
        summary = cal.summary()
    except (CalibrationError, ConfigError, FileNotFoundError) as e:
        return Check("calibration", FAIL, str(e), "redo the named calibration step (docs/calibration.md)")
    oldest, redo = None, []
    parts = dict(summary["parts"])
    arms = parts.pop("arms", {})
    for part, sec in [*parts.items(), *((f"arm {k}", v) for k, v in arms.items())]:
        if not sec:
            continue
        if sec.get("verdict") == "redo":
            redo.append(part)
        when = sec.get("when")
        try:
            t = datetime.fromisoformat(when).timestamp() if when else None
        except ValueError:
            t = None
        if t is not None and (oldest is None or t < oldest[0]):
            oldest = (t, part)
    if redo:
        return Check(
            "calibration",
            WARN,
            f"{path}: {', '.join(redo)} used despite a REDO verdict",
            "redo them as soon as possible",
        )
    if oldest is None:
        return Check("calibration", WARN, f"{path}: no dates in the file", "check it with 'scallop calibrate check'")
    age = (now - oldest[0]) / 86400.0
    if age > CALIBRATION_WARN_DAYS:
        return Check(
            "calibration",
            WARN,
            f"{path}: {oldest[1]} measured {age:.0f} days ago",
            "run 'scallop calibrate check' for drift (docs/calibration.md)",
        )
    return Check("calibration", OK, f"{path}: every verdict good, oldest part {age:.0f} days old")


def check_model(cfg: LineConfig) -> Check:
    """The model the line would run (the registry's live one, ``vision.model``, or the shipped
    one for its channels) loads, and reads the channels the line has."""
    from scallop.app.line.models import line_model_path

    restore = "reinstall the version, or restore the model from a backup"
    try:
        try:
            path = line_model_path(cfg)  # as the line finds it at its start
        except DataError as e:  # the registry's live model missing or changed
            return Check("model", FAIL, str(e), "roll back ('scallop model rollback') or add the model again")
        from scallop.vision.pipeline import Pipeline, PipelineConfig

        pipe = Pipeline(config=PipelineConfig(model=str(path), threads=1))
        digest = _sha256(path)
    except (ScallopError, OSError, KeyError) as e:
        return Check("model", FAIL, str(e), restore)
    channel = cfg.camera.fluorescence.enabled
    if pipe.takes_uv and not channel:
        return Check(
            "model",
            FAIL,
            f"{path.name} reads the fluorescence channel, which this line does not have",
            "set up [camera.fluorescence] (docs/fluorescence.md), or run a colour-only model",
        )
    reads = "colour and fluorescence" if pipe.takes_uv else "colour only" + (", the channel unread" if channel else "")
    found = f"{path.name} loads ({reads}), sha256 {digest[:16]}"
    from scallop.app.line.settings import HIDDEN_URO_OFF, hidden_uro_default

    p = cfg.vision.hidden_uro_probability
    if p >= HIDDEN_URO_OFF:
        # The line raises its alarm for this at every start; the doctor says so beforehand.
        return Check(
            "model",
            WARN,
            f"{found}; vision.hidden_uro_probability = {p:g}: scallops whose uro is seen too little to grip "
            "pass on as clean",
            f"set it back to {hidden_uro_default()} (docs/interfaces.md)",
        )
    untested = _scale_untested(cfg, pipe)
    if untested:  # as the line's vision.scale_untested alarm
        return Check(
            "model",
            WARN,
            f"{found}; {untested}",
            "set the camera's height or lens back (docs/cameras.md, Resolution), or measure the model at "
            "this scale ('scallop eval' on labelled frames from this camera)",
        )
    return Check("model", OK, found)


def _scale_untested(cfg: LineConfig, pipe) -> str:
    """The calibrated camera's scale when it lies outside the scales the model was measured at
    ("" when inside, or when there is no calibration to read: the calibration check says why)."""
    if not cfg.runtime.calibration:
        return ""  # the simulator's camera stays within 0.3–1.0 mm/px (sim.camera.mm_per_px)
    from scallop.app.backends import load_line_calibration
    from scallop.app.evaluation import scale_outside_measured
    from scallop.calibration.errors import CalibrationError

    try:
        scale = load_line_calibration(cfg, arms=False).mm_per_px_center()
    except (CalibrationError, ConfigError, OSError, ValueError):
        return ""
    span = scale_outside_measured(pipe.model.info.meta, scale)
    if span is None:
        return ""
    return (
        f"the camera sees the belt at {scale:.2f} mm/px, outside the {span[0]:g}–{span[1]:g} mm/px it was measured at"
    )


def check_disk(cfg: LineConfig) -> Check:
    from scallop.app.record import default_db_path
    from scallop.app.record.retention import free_mb

    where = Path(cfg.record.path) if cfg.record.path else Path(default_db_path())
    left, limit = free_mb(where), cfg.record.min_free_mb
    found = f"{left:,.0f} MB free beside {where} (limit {limit:g} MB)"
    if left < limit:
        return Check("disk", FAIL, found, "free space, or lower [record] keep_days / snapshot_keep_days")
    if left < 2 * limit:
        return Check("disk", WARN, found, "free space soon; the line raises an alarm at the limit")
    return Check("disk", OK, found)


def check_record(cfg: LineConfig) -> Check:
    from scallop.app.record import RecordError, default_db_path
    from scallop.app.record.check import check_record as inspect

    path = Path(cfg.record.path) if cfg.record.path else Path(default_db_path())
    if not path.exists():
        return Check("record", OK, f"{path}: none yet (the line creates it)")
    try:
        rep = inspect(path)
    except (RecordError, OSError) as e:
        return Check("record", FAIL, str(e), "restore the record from a backup (docs/plant-pc.md)")
    if rep.integrity != "ok":
        return Check("record", FAIL, f"{path}: {rep.integrity}", "restore the record from a backup (docs/plant-pc.md)")
    found = (
        f"{path}: schema {rep.schema_version}, {rep.runs} runs, {len(rep.crashed)} crashed, "
        f"{len(rep.unknown_picks)} picks of unknown outcome, {len(rep.spill_files)} spill files"
        + (f", {len(rep.set_aside)} damaged record(s) set aside beside it" if rep.set_aside else "")
    )
    if rep.findings:
        return Check("record", WARN, found, "see 'scallop record check' for which runs, scallops and files")
    return Check("record", OK, found)


def check_users(cfg: LineConfig) -> Check:
    if not cfg.ui.users_file:
        if cfg.real_devices():
            return Check(
                "users", FAIL, "no [ui] users_file on a line with real devices", "create one: scallop users add NAME"
            )
        return Check("users", OK, "the simulator's users (no users file)")
    from scallop.app.auth import UserStore

    path = Path(cfg.ui.users_file)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        n = len(UserStore.load(path).users())
    except (ScallopError, OSError) as e:
        return Check("users", FAIL, str(e), "create or restore the users file (scallop users add)")
    if mode & 0o077:
        return Check("users", WARN, f"{path}: {n} users, readable by others (mode {mode:04o})", f"chmod 600 {path}")
    return Check("users", OK, f"{path}: {n} users, mode {mode:04o}")


def check_clock() -> Check:
    """Whether the system clock is kept in sync (the record's times, the shift reports)."""
    if shutil.which("timedatectl"):
        r = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5
        )
        if r.returncode == 0 and r.stdout.strip() in ("yes", "no"):
            if r.stdout.strip() == "yes":
                return Check("clock", OK, "synchronised (NTP)")
            return Check(
                "clock", WARN, "not synchronised", "set an NTP server the line PC can reach (timedatectl, chrony)"
            )
    if shutil.which("chronyc"):
        r = subprocess.run(["chronyc", "tracking"], capture_output=True, text=True, timeout=5)
        if r.returncode == 0 and "Leap status     : Normal" in r.stdout:
            return Check("clock", OK, "synchronised (chrony)")
    return Check("clock", WARN, "cannot tell whether the clock is synchronised", "install systemd-timesyncd or chrony")


# ---------------------------------------------------------------------------- all of them
def run_checks(cfg: LineConfig, now: float | None = None, clock: bool = True) -> list[Check]:
    now = time.time() if now is None else now
    checks = [check_camera(cfg)]
    for optional in (check_configuration(cfg), check_fluorescence_camera(cfg), check_encoder(cfg)):
        if optional is not None:
            checks.append(optional)
    checks += [check_arm(a) for a in cfg.arms if a.transport is not None]
    checks.append(check_plc(cfg))
    checks += [check_calibration(cfg, now), check_model(cfg), check_disk(cfg), check_record(cfg), check_users(cfg)]
    if clock:
        checks.append(check_clock())
    return checks
