"""Which files in a folder are camera frames, and which are a frame's companions.

A colour frame ``x.jpg`` (or ``.png``, …) may have a fluorescence frame beside it, already
registered to its pixels: ``x.uv.png`` (``../shared/spec/scallop-appearance.md``, "Files"). That
file ends in ``.png`` but is never a frame of its own: read as one it would be a grey picture of
glowing uros that every reader (camera folders, data sets, calibration photos, ``scallop detect``)
would take for one more scene. Every reader asks this module, so they agree.

Like :mod:`scallop.errors` this sits at the namespace root, below every package, and imports
nothing of theirs.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

#: What a frame file may end in (lower case); OpenCV reads all of them.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: The fluorescence companion of ``x.<suffix>`` is ``x`` + this.
COMPANION_SUFFIX = ".uv.png"
# An empty file is not damaged data: something stopped writing it (a copy cut short, a full disk).
EMPTY = "empty file (0 bytes): its copy or its writing was cut short; copy it again"
EMPTY_FILE = "{}: " + EMPTY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The closing chunk, whole: length 0, type, CRC.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
CUT_PNG = "PNG file cut short (no end marker): its copy or its writing was interrupted; copy it again"
DAMAGED_PNG = "PNG data damaged ({}): copy the file again, or take the picture again"


def png_damage(data) -> str:
    """What is wrong with the PNG ``data`` (the file's bytes, bytes or a uint8 array), to tell
    the user after the file's name; "" when its chunks are whole up to the closing IEND, or it
    is no PNG. Said in one line before libpng would print its own complaint on stderr.

    Unlike JPEG, PNG carries a CRC per chunk: every chunk's is checked (zlib's, in C: about
    0.5 ms a megabyte here), so a flipped bit anywhere is found, not only one libpng trips over. A
    chunk running past the end, or no IEND, is a copy cut short. Bytes after IEND (a tool's
    padding or trailer) are allowed, as decoders allow them."""
    import zlib

    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if bytes(buf[:8]) != PNG_SIGNATURE:
        # A PNG's first chunk where it belongs, after 8 bytes that are not its signature.
        return DAMAGED_PNG.format("its signature, the first 8 bytes") if bytes(buf[12:16]) == b"IHDR" else ""
    pos, n = 8, len(buf)
    order = _PngOrder()
    while pos + 8 <= n:
        length = int.from_bytes(buf[pos : pos + 4], "big")
        kind = bytes(buf[pos + 4 : pos + 8])
        name = "".join(chr(c) if 32 < c < 127 and c != 92 else f"\\x{c:02x}" for c in kind)
        if length > 0x7FFFFFFF:  # the format's own limit: a damaged length field
            return DAMAGED_PNG.format(f"chunk {name} at byte {pos} claims {length} bytes")
        end = pos + 8 + length
        if end + 4 > n:
            # Past the end: a copy cut short, unless the file's closing chunk is still there
            # after this one, whose length field is then what is damaged.
            if bytes(buf[-12:]) == PNG_END or PNG_END in bytes(buf[pos + 8 :]):
                return DAMAGED_PNG.format(f"chunk {name} at byte {pos}: its length runs past the file's end chunk")
            return CUT_PNG
        if zlib.crc32(buf[pos + 4 : end]) != int.from_bytes(buf[end : end + 4], "big"):
            return DAMAGED_PNG.format(f"chunk {name} at byte {pos} fails its checksum")
        why = order.see(kind, buf, pos + 8, end)
        if why:
            return DAMAGED_PNG.format(f"chunk {name} at byte {pos}: {why}")
        if kind == b"IEND":
            return ""
        pos = end + 4
    return CUT_PNG


# Bit depths each PNG colour type allows (the PNG specification, IHDR).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


class _PngOrder:
    """The critical chunks' rules of the PNG specification, checked chunk by chunk in the
    order read, so that what libpng would refuse in its own words on stderr ("IHDR: out of
    place", "unhandled critical chunk", "Invalid bit depth in IHDR", "Not enough image data"
    for image data cut by another chunk) is said in ours. The image data itself is not
    inflated here (that costs most of a decode): a zlib stream broken under right checksums,
    which only a faulty writer makes, is left to the decoder. A few flags, not the list of
    chunks seen: a file of many small chunks costs one step a chunk."""

    def __init__(self) -> None:
        self.header = self.palette = False
        self.data = 0  # image data: 0 none yet, 1 in its run of IDAT chunks, 2 over
        self.colour = -1

    def see(self, kind: bytes, buf, start: int, end: int) -> str:
        """``kind``'s body is ``buf[start:end]`` (read only for the header and the end)."""
        if not self.header and kind != b"IHDR":
            return "the header chunk IHDR must come first"
        if self.data == 1 and kind != b"IDAT":
            self.data = 2
        if kind == b"IDAT":
            if self.data == 2:
                return "the image data is cut in two by another chunk"
            if self.colour == 3 and not self.palette:
                return "a palette picture without its palette"
            self.data = 1
        elif kind == b"IHDR":
            if self.header:
                return "a second header"
            self.header = True
            body = bytes(buf[start:end])
            if len(body) != 13:
                return f"a header of {len(body)} bytes, not 13"
            w, h = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            depth, colour, comp, filt, lace = body[8:13]
            if not (0 < w < 2**31 and 0 < h < 2**31):
                return f"a picture of {w}x{h} pixels"
            if depth not in _PNG_DEPTHS.get(colour, ()):
                return f"bit depth {depth} with colour type {colour} is no PNG"
            if comp or filt or lace > 1:
                return "a compression, filter or interlace method PNG does not have"
            self.colour = colour
        elif kind == b"PLTE":
            if self.data:
                return "the palette comes after the image data"
            self.palette = True
        elif kind == b"IEND":
            if not self.data:
                return "no image data"
            if end > start:
                return "the end chunk carries data"
        elif kind[:1].isupper():
            # A critical chunk no decoder here knows: the picture cannot be read without it.
            return "a critical chunk this software does not know"
        return ""


# 50 megapixels: twice a 6K industrial sensor. Decoded, that is 150 MB of BGR; a 20000x20000
# file (1.2 GB decoded, several GB while OpenCV works on it) is refused before decoding.
MAX_IMAGE_PIXELS = 50_000_000


def file_bytes(path: str | os.PathLike) -> tuple[np.ndarray | None, str]:
    """The file's bytes, or None and why it cannot be read: there, but no permission or a disk
    error. Each reader raises its own error with the words, naming the file, and goes on to the
    next image (an unreadable one stopped a whole ``scallop detect`` run)."""
    try:
        return np.fromfile(str(path), dtype=np.uint8), ""
    except OSError as e:
        return None, f"{path}: cannot be read ({e.strerror or e})"


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding it (Pillow reads only the
    header on open); None when the format is not one Pillow knows."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
        except Image.DecompressionBombError as e:
            # Pillow's own bomb check fired first; its message carries the pixel count.
            import re

            m = re.search(r"\((\d+) pixels\)", str(e))
            return (int(m.group(1)) if m else 2**31, 1)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None


def too_large(size: tuple[int, int] | None, max_pixels: int = MAX_IMAGE_PIXELS, what: str = "image") -> str:
    """Why an image of ``size`` (its header's, :func:`image_size`) is refused before decoding,
    to say after its file's name; "" when it is not larger than ``max_pixels``."""
    if size is None or size[0] * size[1] <= max_pixels:
        return ""
    w, h = size
    shown = f"{w}x{h} ({w * h / 1e6:.0f} megapixels)" if h > 1 else f"{w / 1e6:.0f} megapixels"
    return f"{what} is {shown}, above the {max_pixels / 1e6:g} megapixel limit: scale it down first"


JPEG_SOI = b"\xff\xd8\xff"
CUT_JPEG = "JPEG file cut short (its data ends before the picture does): its copy or its writing was interrupted; copy it again"
DAMAGED_JPEG = (
    "JPEG data damaged ({}): the decoder would make up part of the picture (grey or shifted blocks); "
    "copy the file again, or take the picture again"
)


def decode_color(data: np.ndarray) -> tuple[np.ndarray | None, str]:
    """``data`` (a file's bytes as uint8) decoded to (H, W, 3) uint8 BGR, as OpenCV's
    ``imdecode(data, IMREAD_COLOR)`` gives it: ``(image, "")``, ``(None, "")`` when no decoder
    reads it, or ``(None, why)`` for a JPEG or PNG cut short or damaged inside its data
    (``why``: what to tell the user after the file's name; PNG: :func:`png_damage`).

    OpenCV decodes a JPEG damaged inside its data anyway (libjpeg only warns, on stderr): the
    picture past the damage comes out grey or shifted, and a scallop there would silently go
    missing from the answer. JPEGs are therefore decoded by libjpeg-turbo through ``simplejpeg``
    in strict mode, where such a warning is an error; the same library with the same settings
    (accurate integer DCT, smooth chroma upsampling) as OpenCV's, so the pixels are the same
    (tests/test_image_decode.py). Where OpenCV would turn the picture (an EXIF orientation) or
    convert an unusual colour space, the file is checked that way and then left to OpenCV."""
    if bytes(data[:3]) != JPEG_SOI:
        why = png_damage(data)
        return (None, why) if why else (_opencv_colour(data), "")
    import simplejpeg

    buf = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
    try:
        space = simplejpeg.decode_jpeg_header(buf)[2]
    except ValueError:
        # A header this decoder cannot size (sampling factors outside its table, or a header cut
        # short): OpenCV reads it, or says it cannot, as before; its data is not checked.
        return _opencv_colour(data), ""
    plain = space in ("YCbCr", "Gray") and not _exif_turns(buf)
    try:
        img = simplejpeg.decode_jpeg(buf, "CMYK" if space in ("CMYK", "YCCK") else "BGR")
    except ValueError as e:
        why = str(e).strip().rstrip(".").removeprefix("Corrupt JPEG data: ") or "unreadable"
        if "Premature end of JPEG file" in why:
            return None, CUT_JPEG
        if _zero_padding_before_end(buf, why):  # a whole picture, as some encoders pad it
            img = simplejpeg.decode_jpeg(buf, "BGR", strict=False) if plain else None
        elif why.startswith("Unsupported") and "marker" not in why:
            # Not damage: a kind of JPEG this decoder does not read (12-bit samples, a colour
            # conversion); OpenCV may read it, or says it cannot. A bad marker is damage.
            return _opencv_colour(data), ""
        else:
            return None, DAMAGED_JPEG.format(why)
    # Turned by its EXIF orientation or in another colour space: checked above, OpenCV's picture.
    return (img if plain else _opencv_colour(data)), ""


def _opencv_colour(data) -> np.ndarray | None:
    """OpenCV's colour picture of ``data``, None where it cannot read it: its own checks (an
    image past its pixel limit, say) raise rather than return None, and would reach the user
    as an internal error."""
    try:
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def _zero_padding_before_end(buf: bytes, why: str) -> bool:
    """libjpeg's complaint ``why`` is "N extraneous bytes before marker 0xd9" and those N bytes,
    just before the file's end marker, are zeros: padding after a whole picture (some hardware
    encoders write it), not data cut out of it."""
    import re

    m = re.fullmatch(r"(\d+) extraneous bytes before marker 0xd9", why)
    end = buf.rfind(b"\xff\xd9")
    if not m or end < 0:
        return False
    n = int(m.group(1))
    return 0 < n <= end and not any(buf[end - n : end])


def _exif_turns(buf: bytes) -> bool:
    """The JPEG's header carries an EXIF block whose orientation is not "as stored" (a phone
    photo): OpenCV turns such a picture upright. Only the segments before the image data are
    walked (a few hundred bytes for a camera's frame, which has no EXIF)."""
    i, n = 2, len(buf)
    while i + 4 <= n and buf[i] == 0xFF:
        marker = buf[i + 1]
        if marker == 0xFF:  # a fill byte before a marker
            i += 1
            continue
        if marker == 0xDA:  # start of scan: no more header segments
            return False
        size = int.from_bytes(buf[i + 2 : i + 4], "big")
        if marker == 0xE1 and buf[i + 4 : i + 10] == b"Exif\x00\x00":
            import io

            from PIL import Image

            try:
                with Image.open(io.BytesIO(buf)) as im:
                    return im.getexif().get(0x0112, 1) not in (1, None)
            except Exception:  # an EXIF block Pillow cannot parse: leave the turning to OpenCV
                return True
        i += 2 + size
    # A header that cannot be walked to its image data: OpenCV decides, as before.
    return True


def fluorescence_file_problem(path: str | os.PathLike, data) -> str:
    """Why the bytes ``data`` of fluorescence frame ``path`` are no usable PNG ("" when they
    may be): another format under the name (a JPEG renamed), or a PNG cut short or damaged
    (:func:`png_damage`)."""
    if bytes(data[:8]) != PNG_SIGNATURE:
        # JPEG's 8x8 blocks and chroma rounding would read as glow: the spec stores it lossless.
        held = " (it holds JPEG data)" if bytes(data[:3]) == b"\xff\xd8\xff" else ""
        return f"{path}: not a PNG file{held}: a fluorescence frame is stored lossless as PNG, whatever its name says"
    why = png_damage(data)
    if why:
        return f"{path}: {why}"
    # Whole: then its header says what it holds (IHDR, always the first chunk, checked above).
    depth, colour = int(data[24]), int(data[25])
    if (depth, colour) != (8, 0):
        kinds = {
            0: "grey",
            2: "colour (RGB)",
            3: "palette colour",
            4: "grey with an alpha channel",
            6: "colour with alpha",
        }
        return (
            f"{path}: a fluorescence frame is one channel of 8-bit grey levels, this PNG holds "
            f"{depth}-bit {kinds.get(colour, 'unknown')} data: save it as 8-bit greyscale"
        )
    return ""


def is_companion(path: str | os.PathLike) -> bool:
    """``path`` names a fluorescence companion (``*.uv.png``), whether or not its frame exists."""
    return Path(path).name.lower().endswith(COMPANION_SUFFIX)


def is_frame(path: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> bool:
    """``path`` names a frame file: an image suffix, and not a companion."""
    p = Path(path)
    return p.suffix.lower() in suffixes and not is_companion(p)


def frame_files(folder: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """The frame files directly in ``folder``, in name order; companions left out."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_frame(p, suffixes))


def companion_path(frame: str | os.PathLike) -> Path:
    """Where the fluorescence companion of ``frame`` is or would be (``x.jpg`` → ``x.uv.png``).
    A companion whose suffix is in other letter case (``X.UV.PNG`` beside ``X.JPG``, as some
    camera PCs write) is found too: every reader counts such a file as a companion, never a
    frame, so its frame must find it. The name before the suffix must be the frame's own, letter
    for letter: ``a.jpg`` never takes ``A.uv.png``, which is ``A.jpg``'s."""
    return companion_paths([frame])[0]


def companion_paths(frames) -> list[Path]:
    """:func:`companion_path` of each frame: the exact name if something is there, else a
    companion of the same stem with its suffix in other letter case (the first in name order),
    else the exact name. Each folder is listed at most once: a folder of thousands of frames
    without companions would otherwise be listed once a frame."""
    n = len(COMPANION_SUFFIX)
    by_stem: dict[Path, dict[str, str]] = {}
    out = []
    for frame in frames:
        p = Path(frame)
        exact = p.with_name(p.stem + COMPANION_SUFFIX)
        if exact.exists() or exact.is_symlink():
            out.append(exact)
            continue
        if p.parent not in by_stem:
            names: dict[str, str] = {}
            try:
                with os.scandir(p.parent) as entries:
                    for e in entries:
                        if is_companion(e.name):
                            # Of two suffixes in other letter case, the first name in name order:
                            # the same pick on every disk, whatever order it lists a folder in.
                            stem = e.name[:-n]
                            names[stem] = min(names.get(stem, e.name), e.name)
            except OSError:  # no such folder: the frame's own read says so
                pass
            by_stem[p.parent] = names
        out.append(p.with_name(by_stem[p.parent].get(p.stem, exact.name)))
    return out


def companion_of(frame: str | os.PathLike, at: Path | None = None) -> Path | None:
    """The fluorescence companion beside ``frame`` (``x.jpg`` → ``x.uv.png``), None if absent
    (or not a file: :func:`broken_companion` tells the two apart). ``at``: its
    :func:`companion_path` when already known."""
    c = companion_path(frame) if at is None else at
    return c if c.is_file() else None


def broken_companion(frame: str | os.PathLike, at: Path | None = None) -> Path | None:
    """Something named as ``frame``'s companion that is not a file (a folder, a dangling
    link): a pair that cannot be read, not a frame without one. None otherwise. ``at``: its
    :func:`companion_path` when already known."""
    c = companion_path(frame) if at is None else at
    return c if not c.is_file() and (c.exists() or c.is_symlink()) else None


def frame_of(companion: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Path | None:
    """The frame a companion belongs to (``x.uv.png`` → ``x.jpg``, ``x.Jpg``, …), None if none is
    there: the same name before the suffix, letter for letter, and an image suffix in any
    letter case (as :func:`companion_path` pairs them)."""
    p = Path(companion)
    stem = p.name[: -len(COMPANION_SUFFIX)]
    for s in suffixes:
        cand = p.with_name(stem + s)
        if cand.is_file():
            return cand
    try:
        with os.scandir(p.parent) as entries:
            found = sorted(e.name for e in entries if Path(e.name).stem == stem and is_frame(e.name, suffixes))
    except OSError:
        return None
    for name in found:
        if (p.parent / name).is_file():
            return p.parent / name
    return None


def no_frames_message(folder: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> str:
    """Why a folder gave no frames, in words (a folder of companions only says so)."""
    folder = Path(folder)
    only = ", ".join(suffixes)
    if folder.is_dir() and any(is_companion(p) for p in folder.iterdir()):
        return (
            f"{folder}: folder holds no frames ({only}); its *{COMPANION_SUFFIX} files are fluorescence "
            "companions of frames, never frames of their own"
        )
    return f"{folder}: folder holds no images ({only})"


def read_ahead(paths, read):
    """``(path, read(path))`` for each path in order, the next file read on a second thread
    while the caller works on this one: decoding releases the GIL, so with a core to spare the
    reading hides behind the work (``scallop detect`` over a folder, and both sides of its
    timing against the speed anchor in ``scallop bench vision``). What ``read`` raised is
    given in place of its result, for the caller to report and go on. At most one file is read
    ahead; the thread ends with the loop, also when the caller stops early."""
    from concurrent.futures import ThreadPoolExecutor

    paths = list(paths)
    if not paths:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        nxt = pool.submit(read, paths[0])
        for i, path in enumerate(paths):
            try:
                got = nxt.result()
            except Exception as e:  # handed over: the caller knows which errors are per file
                got = e
            if i + 1 < len(paths):
                nxt = pool.submit(read, paths[i + 1])
            yield path, got
