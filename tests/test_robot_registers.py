"""Register maps: the profiles as data, the codec, and the validation messages."""

from __future__ import annotations

import dataclasses
import math
import struct

import pytest

from scallop.robot.arm import PROTOCOL_FIELDS, check_profile
from scallop.robot.errors import ProfileError, RegisterValueError
from scallop.robot.registers import Field, RegisterMap, builtin_profiles


def minimal(**over) -> dict:
    d = {
        "profile": {"name": "t", "version": 1, "word_order": "big"},
        "blocks": {
            "status": {"start": 0, "count": 4, "access": "r"},
            "command": {"start": 10, "count": 6, "access": "w"},
        },
        "fields": {
            "a": {"address": 0, "type": "uint16", "access": "r", "block": "status"},
            "b": {"address": 2, "type": "int32", "access": "r", "block": "status", "scale": 0.01, "unit": "mm"},
            "c": {"address": 10, "type": "float32", "access": "w", "block": "command"},
            "d": {"address": 12, "type": "int16", "access": "w", "block": "command"},
            "e": {"address": 13, "type": "uint32", "access": "w", "block": "command"},
        },
    }
    for k, v in over.items():
        d[k] = v
    return d


# ---------------------------------------------------------------- built-in profiles
def test_builtin_profiles_load_and_carry_the_protocol():
    assert {"generic", "ur"} <= set(builtin_profiles())
    for name in ("generic", "ur"):
        m = RegisterMap.load(name)
        check_profile(m)
        assert m.version == 2 and m.word_order == "big"
        for f in PROTOCOL_FIELDS:
            assert m.field(f).description, f"{name}.{f} has no description"
        # The command block fits one write request, the status block one read request.
        assert m.block("command").count <= 123 and m.block("status").count <= 125


def test_generic_and_ur_share_layout_offset_by_128():
    g, u = RegisterMap.load("generic"), RegisterMap.load("ur")
    assert set(g.fields) == set(u.fields)
    for name, f in g.fields.items():
        uf = u.field(name)
        assert uf.address == f.address + 128, name
        assert (uf.type, uf.scale, uf.access, uf.block) == (f.type, f.scale, f.access, f.block)
    lo, hi = u.span()
    assert 128 <= lo and hi - 1 <= 255  # UR's general-purpose registers
    assert u.address("cmd_seq") == 150 and u.address("grip_time_ms") == 156


def test_generic_key_addresses_match_the_document():
    g = RegisterMap.load("generic")
    expect = {
        "interface_version": 0,
        "arm_heartbeat": 1,
        "arm_state": 2,
        "fault_code": 3,
        "ack_seq": 4,
        "done_seq": 5,
        "result": 6,
        "arm_time_ms": 8,
        "tcp_x": 10,
        "picks_total": 16,
        "ctrl_heartbeat": 20,
        "watchdog_ms": 21,
        "cmd_seq": 22,
        "cmd_type": 24,
        "target_id": 26,
        "grip_time_ms": 28,
        "belt_vx": 30,
        "approach_x": 36,
        "grasp_x": 44,
        "grip_end_x": 52,
        "pull_end_x": 60,
        "chute_x": 68,
        "ready_x": 76,
        "ready_speed": 82,
    }
    assert {k: g.address(k) for k in expect} == expect
    assert (g.block("status").start, g.block("status").count) == (0, 18)
    assert (g.block("command").start, g.block("command").count) == (24, 59)


def test_unknown_profile_names_the_choices(tmp_path):
    with pytest.raises(ProfileError, match="unknown robot profile 'kuka'.*generic.*ur"):
        RegisterMap.load("kuka")
    with pytest.raises(ProfileError, match="no such profile file"):
        RegisterMap.load(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[profile\nname=")
    with pytest.raises(ProfileError, match="not valid TOML"):
        RegisterMap.load(bad)


def test_profile_file_by_path(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text(
        '[profile]\nname = "mine"\nversion = 3\nword_order = "little"\n'
        '[blocks]\ns = { start = 5, count = 2, access = "r" }\n'
        '[fields.x]\naddress = 5\ntype = "int32"\naccess = "r"\nblock = "s"\nscale = 0.1\nunit = "mm"\n'
    )
    m = RegisterMap.load(p)
    assert (m.name, m.version, m.word_order) == ("mine", 3, "little")
    assert m.encode_field("x", -1.5) == [0xFFF1, 0xFFFF]  # -15 little-endian word order


# ---------------------------------------------------------------- codec
@pytest.mark.parametrize(
    "ftype,value,words",
    [
        ("uint16", 65535, [0xFFFF]),
        ("uint16", 0, [0]),
        ("int16", -1, [0xFFFF]),
        ("int16", -32768, [0x8000]),
        ("uint32", 0x12345678, [0x1234, 0x5678]),
        ("int32", -2, [0xFFFF, 0xFFFE]),
        ("int32", 2147483647, [0x7FFF, 0xFFFF]),
    ],
)
def test_integer_encoding_big_word_order(ftype, value, words):
    f = Field("f", 0, ftype, "r", "s")
    assert f.encode(value, "big") == words
    assert f.decode(words, "big") == value
    if len(words) == 2:
        assert f.encode(value, "little") == words[::-1]
        assert f.decode(words[::-1], "little") == value


def test_float32_matches_ieee754_and_word_order():
    f = Field("f", 0, "float32", "w", "s")
    hi, lo = struct.unpack(">HH", struct.pack(">f", 1234.5))
    assert f.encode(1234.5, "big") == [hi, lo]
    assert f.encode(1234.5, "little") == [lo, hi]
    assert f.decode([hi, lo], "big") == pytest.approx(1234.5)
    assert math.isclose(f.decode(f.encode(-0.1), "big"), -0.1, rel_tol=1e-7)


def test_scaled_values_round_trip_to_the_scale():
    f = Field("grasp_x", 0, "int32", "w", "c", scale=0.01, unit="mm")
    assert f.encode(412.25) == [0, 41225]
    assert f.decode([0, 41225]) == 412.25
    assert f.decode(f.encode(-0.004)) == 0.0  # below resolution rounds to 0
    assert f.decode(f.encode(-123.456)) == -123.46
    assert f.value_range() == (-21474836.48, 21474836.47)


def test_out_of_range_names_field_unit_and_allowed_range():
    f = Field("grasp_x", 0, "int32", "w", "c", scale=0.01, unit="mm")
    with pytest.raises(
        RegisterValueError,
        match=r"grasp_x=30000000\.0 mm is out of range for int32 at scale 0\.01: "
        r"allowed -21474836\.48\.\.21474836\.47 mm",
    ):
        f.encode(3e7)
    g = Field("speed", 0, "uint16", "w", "c", unit="mm/s")
    with pytest.raises(RegisterValueError, match=r"speed=-1 mm/s is out of range for uint16.*allowed 0\.\.65535 mm/s"):
        g.encode(-1)
    with pytest.raises(RegisterValueError, match="not a finite number"):
        g.encode(float("nan"))
    with pytest.raises(RegisterValueError, match="expected a number"):
        g.encode("fast")
    with pytest.raises(RegisterValueError, match="expected 2 register"):
        f.decode([1])
    with pytest.raises(RegisterValueError, match="not a 16-bit value"):
        g.decode([70000])


def test_block_encode_decode_and_gaps():
    m = RegisterMap.from_dict(minimal())
    words = m.encode_block("command", {"c": 2.5, "d": -7, "e": 70000})
    assert len(words) == 6
    assert words[2] == 0xFFF9 and words[3:5] == [1, 4464] and words[5] == 0
    back = m.decode_block("command", words)
    assert back == {"c": 2.5, "d": -7, "e": 70000}
    with pytest.raises(RegisterValueError, match="belongs to block 'status'"):
        m.encode_block("command", {"a": 1})
    with pytest.raises(ProfileError, match="has no field 'zz'"):
        m.encode_block("command", {"zz": 1})
    assert m.in_blocks(10, 6, "w") and not m.in_blocks(3, 2, "w") and not m.in_blocks(0, 1, "w")
    assert m.in_blocks(0, 4) and not m.in_blocks(4, 1)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "mutate,message",
    [
        (
            lambda d: d["fields"]["a"].update(type="int64"),
            r"fields\.a\.type='int64' is not allowed: choose one of uint16",
        ),
        (lambda d: d["fields"]["a"].update(access="rw"), r"fields\.a\.access='rw' is not allowed"),
        (
            lambda d: d["fields"]["b"].update(address=3),
            r"fields\.b \(registers 3\.\.4\) lies outside blocks\.status \(0\.\.3\)",
        ),
        (
            lambda d: d["fields"]["e"].update(address=15),
            r"fields\.e \(registers 15\.\.16\) lies outside blocks\.command",
        ),
        (
            lambda d: d["fields"]["c"].update(access="r"),
            r"fields\.c\.access='r' differs from blocks\.command\.access='w'",
        ),
        (lambda d: d["fields"]["c"].update(scale=0), r"fields\.c\.scale=0 must be a positive number"),
        (lambda d: d["fields"]["c"].update(colour="red"), r"fields\.c: unknown key\(s\) colour"),
        (lambda d: d["fields"]["c"].update(block="nope"), r"fields\.c\.block='nope' is not a block"),
        (lambda d: d["blocks"]["command"].update(start=2), r"blocks\.status \(0\.\.3\) overlaps blocks\.command"),
        (
            lambda d: d["blocks"]["command"].update(count=200),
            r"blocks\.command\.count=200 is out of range: allowed 1\.\.123",
        ),
        (lambda d: d["profile"].update(word_order="middle"), r"profile\.word_order='middle' is not allowed"),
        (lambda d: d["profile"].update(version=0), r"profile\.version=0 must be an integer 1\.\.65535"),
        (lambda d: d.update(extra={}), r"unknown section\(s\) extra"),
    ],
)
def test_profile_errors_name_the_field(mutate, message):
    d = minimal()
    mutate(d)
    with pytest.raises(ProfileError, match=message):
        RegisterMap.from_dict(d, "x.toml")


def test_overlapping_fields_are_refused():
    d = minimal()
    d["fields"]["d"]["address"] = 11  # inside c (10..11)
    with pytest.raises(
        ProfileError, match=r"fields\.c \(registers 10\.\.11\) overlaps fields\.d \(registers 11\.\.11\)"
    ):
        RegisterMap.from_dict(d)


def test_profile_missing_protocol_fields_is_refused():
    m = RegisterMap.from_dict(minimal(), "tiny.toml")
    with pytest.raises(ProfileError, match="lacks field.*interface_version.*arm_heartbeat"):
        check_profile(m)


# ---------------------------------------------------------------- the interface document
def test_a_version_1_profile_is_refused_with_what_to_do(tmp_path):
    """Version 1 robot programs do not know PICK_CHAINED (they would reject every chained pick)."""
    from importlib import resources

    text = resources.files("scallop.robot").joinpath("profiles", "generic.toml").read_text()
    old = tmp_path / "old.toml"
    old.write_text(text.replace("version = 2", "version = 1", 1))
    m = RegisterMap.load(str(old))
    with pytest.raises(
        ProfileError,
        match=r"interface version 1; this controller speaks version 2 .*"
        r"update the robot program",
    ):
        check_profile(m)


def test_interface_document_matches_the_profiles_and_codes():
    """docs/robot-interface.md is what integrators build from: its tables must be the data."""
    import re
    from pathlib import Path

    from scallop.robot.arm import ArmState, CommandType, FaultCode, ResultCode

    doc = (Path(__file__).resolve().parents[1] / "docs" / "robot-interface.md").read_text()
    g, u = RegisterMap.load("generic"), RegisterMap.load("ur")
    rows = re.findall(
        r"^\| `(\w+)` \| ([\d–]+) \| ([\d–]+) \| (\w+) \| ([\d.]+) \| ([^|]*) \| (.+) \|$", doc, re.MULTILINE
    )
    assert {r[0] for r in rows} == set(g.fields) == set(PROTOCOL_FIELDS)
    for name, ga, ua, typ, scale, unit, meaning in rows:
        for m, a in ((g, ga), (u, ua)):
            f = m.field(name)
            want = str(f.address) if f.size == 1 else f"{f.address}–{f.last}"
            assert a == want, (name, a, want)
        f = g.field(name)
        assert (typ, float(scale), unit.strip()) == (f.type, f.scale, f.unit), name
        assert meaning.strip() == f.description
    for enum, column in (
        (ArmState, "arm_state"),
        (FaultCode, "fault_code"),
        (ResultCode, "result"),
        (CommandType, "cmd_type"),
    ):
        for member in enum:
            assert re.search(rf"^\| {member.value} {member.name} \|", doc, re.MULTILINE), (column, member)
    for key, value in g.timing.items():
        assert str(value) in doc, key


def test_interface_document_reserved_registers_and_motion_table_are_the_profiles():
    """The reserved registers the document lists, and its table of motion settings, come from
    the profile files (and the code's defaults for the keys no profile carries)."""
    import re
    from pathlib import Path

    from scallop.robot.config import PROFILE_MOTION_KEYS, MotionConfig

    doc = (Path(__file__).resolve().parents[1] / "docs" / "robot-interface.md").read_text()
    g, u = RegisterMap.load("generic"), RegisterMap.load("ur")
    m = re.search(r"Registers not listed \(generic ([\d, ]+); UR ([\d,\s]+)\) are reserved", doc)
    assert m, "the reserved-register sentence of section 3 is missing"
    listed = [[int(x) for x in re.findall(r"\d+", grp)] for grp in m.groups()]
    assert listed == [g.reserved(), u.reserved()]
    rows = re.findall(r"^\| `(\w+)` \| ([\d.]+) \| ([\d.]+) \| [^|]* \| [^|]+ \|$", doc, re.MULTILINE)
    table = {k: (float(a), float(b)) for k, a, b in rows}
    defaults = MotionConfig()
    assert set(table) == {f.name for f in dataclasses.fields(MotionConfig)}
    for key, (gv, uv) in table.items():
        if key in PROFILE_MOTION_KEYS:
            assert (gv, uv) == (g.motion[key], u.motion[key]), key
        else:
            assert gv == uv == getattr(defaults, key), key
    assert set(g.motion) == set(u.motion) == set(PROFILE_MOTION_KEYS)
