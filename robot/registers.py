"""Register maps as data: one TOML profile per robot family, loaded by both the controller
(:mod:`scallop.robot.arm`) and the simulated arm, so the two can never disagree about an
address.

A profile gives, for every field, its address, type (uint16, int16, uint32, int32, float32),
scale (engineering value = raw × scale) and unit, access as seen from the controller
(``r``: the arm writes, the controller reads; ``w``: the controller writes, the arm reads) and
the block it belongs to. Blocks are the contiguous ranges read or written in one request;
32-bit values take two registers in the profile's ``word_order`` (``big``: high word at
the lower address). Bytes within a register are always big-endian, as Modbus defines.

    >>> m = RegisterMap.load("generic")
    >>> regs = m.encode_block("command", {"cmd_type": 1, "grasp_x": 412.25})
    >>> m.decode_block("command", regs)["grasp_x"]
    412.25
"""

from __future__ import annotations

import math
import struct
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from scallop.robot.errors import ProfileError, RegisterValueError

TYPES = ("uint16", "int16", "uint32", "int32", "float32")
ACCESS = ("r", "w")
WORD_ORDERS = ("big", "little")
SIZES = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}
RAW_RANGE = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFFFFFF),
    "int32": (-0x80000000, 0x7FFFFFFF),
}
MAX_REGISTERS_PER_REQUEST = 123  # FC16 limit; FC3 allows 125, the smaller one binds both


@dataclass(frozen=True)
class Field:
    """One value in the map. ``address`` is the first register (0-based protocol address)."""

    name: str
    address: int
    type: str
    access: str
    block: str
    scale: float = 1.0
    unit: str = ""
    description: str = ""
    since: int = 1  # the interface version that added it

    @property
    def size(self) -> int:
        return SIZES[self.type]

    @property
    def last(self) -> int:
        return self.address + self.size - 1

    def value_range(self) -> tuple[float, float]:
        """Smallest and largest engineering value the field can carry."""
        if self.type == "float32":
            return (-3.4028234e38, 3.4028234e38)
        lo, hi = RAW_RANGE[self.type]
        return (lo * self.scale, hi * self.scale)

    def encode(self, value: float, word_order: str = "big") -> list[int]:
        """Engineering value → register words, refusing what does not fit."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise RegisterValueError(f"{self.name}={value!r}: expected a number") from None
        if not math.isfinite(v):
            raise RegisterValueError(f"{self.name}={value!r}: not a finite number")
        if self.type == "float32":
            raw = v / self.scale
            if abs(raw) > 3.4028234e38:
                raise RegisterValueError(f"{self.name}={value!r} is too large for float32")
            hi, lo = struct.unpack(">HH", struct.pack(">f", raw))
            return [hi, lo] if word_order == "big" else [lo, hi]
        scaled = v / self.scale  # may overflow to inf for a huge value at a small scale
        raw = round(scaled) if math.isfinite(scaled) else None
        lo_raw, hi_raw = RAW_RANGE[self.type]
        if raw is None or not lo_raw <= raw <= hi_raw:
            lo_v, hi_v = self.value_range()
            unit = f" {self.unit}" if self.unit else ""
            raise RegisterValueError(
                f"{self.name}={value!r}{unit} is out of range for {self.type} at scale {self.scale:g}: "
                f"allowed {_fmt(lo_v)}..{_fmt(hi_v)}{unit}"
            )
        raw &= 0xFFFFFFFF if self.size == 2 else 0xFFFF
        if self.size == 1:
            return [raw]
        hi, lo = raw >> 16, raw & 0xFFFF
        return [hi, lo] if word_order == "big" else [lo, hi]

    def decode(self, words: Sequence[int], word_order: str = "big") -> float | int:
        """Register words → engineering value (an int when the scale is 1 and the type integral)."""
        if len(words) != self.size:
            raise RegisterValueError(f"{self.name}: expected {self.size} register(s), got {len(words)}")
        for w in words:
            if not 0 <= int(w) <= 0xFFFF:
                raise RegisterValueError(f"{self.name}: register word {w!r} is not a 16-bit value")
        if self.size == 1:
            raw = int(words[0])
            if self.type == "int16" and raw >= 0x8000:
                raw -= 0x10000
        else:
            hi, lo = (int(words[0]), int(words[1])) if word_order == "big" else (int(words[1]), int(words[0]))
            if self.type == "float32":
                return struct.unpack(">f", struct.pack(">HH", hi, lo))[0] * self.scale
            raw = (hi << 16) | lo
            if self.type == "int32" and raw >= 0x80000000:
                raw -= 0x100000000
        if self.scale == 1.0:
            return raw
        # Round to the scale's decimals so 41225 * 0.01 reads back as 412.25, not 412.25000000000006.
        decimals = max(0, -math.floor(math.log10(self.scale)) + 1) if self.scale < 1 else 0
        return round(raw * self.scale, decimals)


def _fmt(v: float) -> str:
    return f"{v:.6g}" if abs(v) < 1e6 else f"{v:.10g}"


@dataclass(frozen=True)
class Block:
    """A contiguous range read or written in one request."""

    name: str
    start: int
    count: int
    access: str

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.start + self.count


@dataclass
class RegisterMap:
    """A loaded, validated profile."""

    name: str
    version: int
    word_order: str
    fields: dict[str, Field]
    blocks: dict[str, Block]
    timing: dict[str, int] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    # The robot program's motion settings ([motion]: speeds, acceleration, gripper times,
    # settle), the defaults of an arm's [arms.motion]; checked by scallop.robot.config.
    motion: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, profile: str | Path) -> RegisterMap:
        """Load a built-in profile by name (``generic``, ``ur``) or a profile file by path."""
        p = str(profile)
        if p.endswith(".toml") or "/" in p or "\\" in p:
            path = Path(p)
            if not path.is_file():
                raise ProfileError(f"{path}: no such profile file")
            text = path.read_bytes()
            source = str(path)
        else:
            res = resources.files("scallop.robot").joinpath("profiles", f"{p}.toml")
            if not res.is_file():
                raise ProfileError(
                    f"unknown robot profile {p!r}: choose one of {', '.join(builtin_profiles())} "
                    "or give the path of a .toml profile"
                )
            text = res.read_bytes()
            source = f"profiles/{p}.toml"
        try:
            data = tomllib.loads(text.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ProfileError(f"{source}: not valid TOML: {e}") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<profile>") -> RegisterMap:
        def err(msg: str) -> ProfileError:
            return ProfileError(f"{source}: {msg}")

        unknown = set(data) - {"profile", "timing", "motion", "blocks", "fields"}
        if unknown:
            raise err(
                f"unknown section(s) {', '.join(sorted(unknown))}; allowed: profile, timing, motion, blocks, fields"
            )
        head = data.get("profile")
        if not isinstance(head, Mapping):
            raise err("missing [profile] table (name, version, word_order)")
        name = head.get("name")
        if not isinstance(name, str) or not name:
            raise err("profile.name must be a non-empty string")
        version = head.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 0xFFFF:
            raise err(f"profile.version={version!r} must be an integer 1..65535")
        word_order = head.get("word_order", "big")
        if word_order not in WORD_ORDERS:
            raise err(f"profile.word_order={word_order!r} is not allowed: choose 'big' or 'little'")

        timing = {}
        for k, v in dict(data.get("timing", {})).items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise err(f"timing.{k}={v!r} must be a non-negative integer (milliseconds)")
            timing[k] = v

        motion = {}
        for k, v in dict(data.get("motion", {})).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise err(f"motion.{k}={v!r} must be a finite number")
            motion[k] = float(v)

        blocks: dict[str, Block] = {}
        raw_blocks = data.get("blocks")
        if not isinstance(raw_blocks, Mapping) or not raw_blocks:
            raise err("missing [blocks] table")
        for bname, b in raw_blocks.items():
            if not isinstance(b, Mapping):
                raise err(f"blocks.{bname} must be a table with start, count, access")
            start, count, access = b.get("start"), b.get("count"), b.get("access")
            if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 0xFFFF:
                raise err(f"blocks.{bname}.start={start!r} must be an address 0..65535")
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_REGISTERS_PER_REQUEST:
                raise err(f"blocks.{bname}.count={count!r} is out of range: allowed 1..{MAX_REGISTERS_PER_REQUEST}")
            if start + count > 0x10000:
                raise err(f"blocks.{bname} runs past register 65535")
            if access not in ACCESS:
                raise err(f"blocks.{bname}.access={access!r} is not allowed: choose 'r' or 'w'")
            blocks[bname] = Block(bname, start, count, access)
        ordered = sorted(blocks.values(), key=lambda b: b.start)
        for a, b in zip(ordered, ordered[1:]):
            if b.start < a.end:
                raise err(f"blocks.{a.name} ({a.start}..{a.end - 1}) overlaps blocks.{b.name} ({b.start}..{b.end - 1})")

        fields: dict[str, Field] = {}
        raw_fields = data.get("fields")
        if not isinstance(raw_fields, Mapping) or not raw_fields:
            raise err("missing [fields] tables")
        allowed_keys = {"address", "type", "access", "block", "scale", "unit", "description", "since"}
        for fname, f in raw_fields.items():
            where = f"fields.{fname}"
            if not isinstance(f, Mapping):
                raise err(f"{where} must be a table")
            extra = set(f) - allowed_keys
            if extra:
                raise err(
                    f"{where}: unknown key(s) {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed_keys))}"
                )
            addr = f.get("address")
            if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr <= 0xFFFF:
                raise err(f"{where}.address={addr!r} must be an integer 0..65535")
            ftype = f.get("type")
            if ftype not in TYPES:
                raise err(f"{where}.type={ftype!r} is not allowed: choose one of {', '.join(TYPES)}")
            access = f.get("access")
            if access not in ACCESS:
                raise err(
                    f"{where}.access={access!r} is not allowed: choose 'r' (arm writes) or 'w' (controller writes)"
                )
            scale = f.get("scale", 1)
            if (
                isinstance(scale, bool)
                or not isinstance(scale, (int, float))
                or not (scale > 0 and math.isfinite(scale))
            ):
                raise err(f"{where}.scale={scale!r} must be a positive number")
            unit = f.get("unit", "")
            desc = f.get("description", "")
            if not isinstance(unit, str) or not isinstance(desc, str):
                raise err(f"{where}: unit and description must be strings")
            bname = f.get("block")
            if bname not in blocks:
                raise err(f"{where}.block={bname!r} is not a block: choose one of {', '.join(blocks)}")
            since = f.get("since", 1)
            if isinstance(since, bool) or not isinstance(since, int) or not 1 <= since <= version:
                raise err(f"{where}.since={since!r} must be an interface version 1..{version} (profile.version)")
            fld = Field(fname, addr, ftype, access, bname, float(scale), unit, desc, since)
            blk = blocks[bname]
            if fld.address < blk.start or fld.last >= blk.end:
                raise err(
                    f"{where} (registers {fld.address}..{fld.last}) lies outside blocks.{bname} "
                    f"({blk.start}..{blk.end - 1})"
                )
            if access != blk.access:
                raise err(f"{where}.access={access!r} differs from blocks.{bname}.access={blk.access!r}")
            fields[fname] = fld
        by_addr = sorted(fields.values(), key=lambda x: x.address)
        for a, b in zip(by_addr, by_addr[1:]):
            if b.address <= a.last:
                raise err(
                    f"fields.{a.name} (registers {a.address}..{a.last}) overlaps fields.{b.name} "
                    f"(registers {b.address}..{b.last})"
                )
        return cls(name, version, word_order, fields, blocks, timing, str(head.get("description", "")), source, motion)

    # ------------------------------------------------------------------ lookup
    def field(self, name: str) -> Field:
        try:
            return self.fields[name]
        except KeyError:
            raise ProfileError(f"profile {self.name!r} has no field {name!r}") from None

    def block(self, name: str) -> Block:
        try:
            return self.blocks[name]
        except KeyError:
            raise ProfileError(
                f"profile {self.name!r} has no block {name!r}: it has {', '.join(self.blocks)}"
            ) from None

    def address(self, name: str) -> int:
        return self.field(name).address

    def require(self, names: Sequence[str], source: str = "the protocol") -> None:
        """Refuse a profile that lacks fields the caller needs, naming every missing one."""
        missing = [n for n in names if n not in self.fields]
        if missing:
            raise ProfileError(
                f"profile {self.name!r} ({self.source}) lacks field(s) {source} needs: {', '.join(missing)}"
            )

    def fields_in(self, block: str) -> list[Field]:
        b = self.block(block)
        return sorted((f for f in self.fields.values() if f.block == b.name), key=lambda f: f.address)

    def span(self) -> tuple[int, int]:
        """First register and one past the last register of all blocks."""
        return min(b.start for b in self.blocks.values()), max(b.end for b in self.blocks.values())

    def reserved(self) -> list[int]:
        """Registers inside the map's span that no field uses (gaps in and between blocks):
        the controller writes 0 to those inside the command block and never reads them."""
        used = {a for f in self.fields.values() for a in range(f.address, f.last + 1)}
        lo, hi = self.span()
        return [a for a in range(lo, hi) if a not in used]

    def in_blocks(self, address: int, count: int, access: str | None = None) -> bool:
        """True if registers ``address..address+count-1`` all lie in blocks (of ``access``, if given)."""
        for a in range(address, address + count):
            if not any(b.start <= a < b.end and (access is None or b.access == access) for b in self.blocks.values()):
                return False
        return True

    # ------------------------------------------------------------------ codec
    def encode_field(self, name: str, value: float) -> list[int]:
        return self.field(name).encode(value, self.word_order)

    def decode_field(self, name: str, words: Sequence[int]) -> float | int:
        return self.field(name).decode(words, self.word_order)

    def encode_block(self, block: str, values: Mapping[str, float]) -> list[int]:
        """The whole block as register words; fields not given (and gaps) are 0."""
        b = self.block(block)
        words = [0] * b.count
        for name, value in values.items():
            f = self.field(name)
            if f.block != b.name:
                raise RegisterValueError(f"field {name!r} belongs to block {f.block!r}, not {block!r}")
            off = f.address - b.start
            words[off : off + f.size] = f.encode(value, self.word_order)
        return words

    def decode_block(self, block: str, words: Sequence[int], start: int | None = None) -> dict[str, float | int]:
        """Decode every field of ``block`` from ``words`` read starting at ``start`` (default the block's start)."""
        b = self.block(block)
        start = b.start if start is None else start
        out: dict[str, float | int] = {}
        for f in self.fields_in(block):
            off = f.address - start
            if off < 0 or off + f.size > len(words):
                raise RegisterValueError(
                    f"{f.name}: registers {f.address}..{f.last} not in the {len(words)} words read from {start}"
                )
            out[f.name] = f.decode(words[off : off + f.size], self.word_order)
        return out

    def table(self) -> list[dict]:
        """Rows for documentation: one per field, in address order."""
        return [
            {
                "name": f.name,
                "address": f.address,
                "registers": f.size,
                "type": f.type,
                "scale": f.scale,
                "unit": f.unit,
                "access": f.access,
                "block": f.block,
                "description": f.description,
            }
            for f in sorted(self.fields.values(), key=lambda f: f.address)
        ]


def builtin_profiles() -> list[str]:
    d = resources.files("scallop.robot").joinpath("profiles")
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".toml"))
