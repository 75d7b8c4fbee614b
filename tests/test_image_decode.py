"""JPEG frames damaged inside their data are refused, not analysed half made up.

OpenCV decodes such a file anyway (libjpeg only warns on stderr) and fills the picture past the
damage with grey or shifted blocks: a scallop there vanished from ``scallop detect``'s answer
with exit 0. ``scallop.imagefiles.decode_color`` decodes JPEGs strictly, with the same pixels as
OpenCV where the file is whole.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from scallop.app.cli import main
from scallop.imagefiles import CUT_JPEG, CUT_PNG, DAMAGED_PNG, decode_color, png_damage


def _scene(h: int = 360, w: int = 640, seed: int = 0) -> np.ndarray:
    """A belt-like picture with detail everywhere: gradients, discs, noise (seeded)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.dstack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (w + h)) + 60]).astype(np.uint8)
    for _ in range(12):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(10, 60)), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return cv2.add(img, rng.integers(0, 12, img.shape, dtype=np.uint8))


def _jpeg(img: np.ndarray, *params: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, list(params))
    assert ok
    return buf.reshape(-1)


def _damaged(buf: np.ndarray, how: str = "zeros") -> np.ndarray:
    """What a failing copy or disk does to a file's middle: a 4 KiB run of zeros (a lost block),
    512 bytes of 0xFF (erased flash), or 512 bytes gone."""
    mid = len(buf) // 2
    if how == "dropped":
        return np.concatenate([buf[:mid], buf[mid + 512 :]])
    out = buf.copy()
    if how == "erased":
        out[mid : mid + 512] = 0xFF
    else:
        out[mid : mid + 4096] = 0
    return out


@pytest.mark.parametrize(
    "params",
    [
        (cv2.IMWRITE_JPEG_QUALITY, 75),
        (cv2.IMWRITE_JPEG_QUALITY, 90),
        (cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
        (cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        (cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, 4),
    ],
)
def test_whole_jpeg_gives_opencvs_pixels(params):
    buf = _jpeg(_scene(), *params)
    img, why = decode_color(buf)
    assert why == ""
    np.testing.assert_array_equal(img, cv2.imdecode(buf, cv2.IMREAD_COLOR))


def test_grey_png_and_unreadable_as_opencv():
    grey = _jpeg(cv2.cvtColor(_scene(), cv2.COLOR_BGR2GRAY))
    img, why = decode_color(grey)
    assert why == "" and img.shape == (360, 640, 3)
    np.testing.assert_array_equal(img, cv2.imdecode(grey, cv2.IMREAD_COLOR))
    png = cv2.imencode(".png", _scene())[1].reshape(-1)
    np.testing.assert_array_equal(decode_color(png)[0], _scene())
    assert decode_color(np.frombuffer(b"not an image", np.uint8)) == (None, "")


def test_exif_orientation_and_cmyk_left_to_opencv():
    """A phone photo turned by its EXIF orientation, and a CMYK JPEG: the same as OpenCV gives."""
    rgb = cv2.cvtColor(_scene(120, 200), cv2.COLOR_BGR2RGB)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: to be shown a quarter turn clockwise
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", exif=exif.tobytes())
    buf = np.frombuffer(b.getvalue(), np.uint8)
    img, why = decode_color(buf)
    assert why == "" and img.shape == (200, 120, 3)
    np.testing.assert_array_equal(img, cv2.imdecode(buf, cv2.IMREAD_COLOR))
    b = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(b, "JPEG")
    buf = np.frombuffer(b.getvalue(), np.uint8)
    img, why = decode_color(buf)
    assert why == ""
    np.testing.assert_array_equal(img, cv2.imdecode(buf, cv2.IMREAD_COLOR))


def test_damaged_and_cut_jpegs_are_refused():
    buf = _jpeg(_scene(720, 1280), cv2.IMWRITE_JPEG_QUALITY, 90)
    bad = _damaged(buf)
    # The hazard: OpenCV returns a whole-sized picture whose lower part is made up.
    made_up = cv2.imdecode(bad, cv2.IMREAD_COLOR)
    assert made_up is not None and made_up.shape == (720, 1280, 3)
    assert not np.array_equal(made_up, cv2.imdecode(buf, cv2.IMREAD_COLOR))
    for damaged in (bad, _damaged(buf, "erased"), _damaged(buf, "dropped")):
        img, why = decode_color(damaged)
        assert img is None and why.startswith("JPEG data damaged (") and "copy the file again" in why
    img, why = decode_color(buf[: len(buf) * 2 // 3])
    assert img is None and why == CUT_JPEG


def test_detect_refuses_a_damaged_jpeg_and_goes_on(tmp_path, capfd):
    """Before: the damaged file was analysed (a scallop past the damage lost) with exit 0, and
    libjpeg's warning went to stderr in its own words."""
    buf = _jpeg(_scene(720, 1280), cv2.IMWRITE_JPEG_QUALITY, 90)
    bad = _damaged(buf)
    assert decode_color(bad)[0] is None
    (tmp_path / "a_whole.jpg").write_bytes(buf.tobytes())
    (tmp_path / "b_damaged.jpg").write_bytes(bad.tobytes())
    rc = main(["detect", str(tmp_path / "a_whole.jpg"), str(tmp_path / "b_damaged.jpg"), "--mm-per-px", "0.5"])
    out, err = capfd.readouterr()
    assert rc == 1  # an unreadable image: said, the others analysed (scallop detect --help)
    assert "a_whole.jpg:" in out and "scallops" in out
    assert "b_damaged.jpg: JPEG data damaged (" in err and "b_damaged.jpg:" not in out
    # One line of ours for it; nothing of libjpeg's on a line of its own.
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        ln for ln in err.splitlines() if ln.startswith("scallop detect: ")
    ]
    assert "Corrupt JPEG data" not in err and "Traceback" not in err


def test_data_set_and_calibration_readers_refuse_it(tmp_path):
    from scallop.calibration.intrinsics import read_photo
    from scallop.models.dataset import DatasetError, _read_image

    bad = _damaged(_jpeg(_scene(720, 1280), cv2.IMWRITE_JPEG_QUALITY, 90))
    p = tmp_path / "x.jpg"
    p.write_bytes(bad.tobytes())
    with pytest.raises(DatasetError, match=r"x.jpg: JPEG data damaged \("):
        _read_image(p, cv2.IMREAD_COLOR)
    # A calibration photo damaged so is unreadable (its corners past the damage would be shifted).
    assert read_photo(p)[0] is None


def test_zero_padding_before_the_end_marker_is_a_whole_picture():
    """Some hardware encoders pad the data with zeros before the end marker: libjpeg complains
    of "extraneous bytes", but the picture is whole (OpenCV's pixels), so it is not refused.
    The same count of other bytes there is damage."""
    buf = _jpeg(_scene(), cv2.IMWRITE_JPEG_QUALITY, 90)
    assert bytes(buf[-2:]) == b"\xff\xd9"
    padded = np.concatenate([buf[:-2], np.zeros(16, np.uint8), buf[-2:]])
    img, why = decode_color(padded)
    assert why == ""
    np.testing.assert_array_equal(img, cv2.imdecode(buf, cv2.IMREAD_COLOR))
    junk = np.concatenate([buf[:-2], np.arange(1, 17, dtype=np.uint8), buf[-2:]])
    img, why = decode_color(junk)
    assert img is None and "extraneous bytes" in why


def test_a_header_cut_short_is_left_to_opencv():
    """Too little of a file to know its size: unreadable, as OpenCV says (the caller's message),
    not "damaged" in a library's words."""
    buf = _jpeg(_scene(), cv2.IMWRITE_JPEG_QUALITY, 90)
    for n in (3, 100):
        assert decode_color(buf[:n]) == (None, "")


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _with_text_chunk(png: bytes) -> bytes:
    """``png`` with a tEXt chunk (an ancillary one, which libpng only warns about) after IHDR."""
    import struct
    import zlib

    body = b"tEXt" + b"Comment\0belt 3"
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:33] + chunk + png[33:]


def test_a_png_damaged_anywhere_is_refused_by_its_checksums(capfd):
    """PNG, unlike JPEG, carries a CRC per chunk: a flipped bit in the pixel data was refused by
    libpng with its own line on stderr ("libpng error: IDAT: CRC error") before ours, and one in
    an ancillary chunk only warned. Every chunk's checksum is checked first now."""
    img = _scene(120, 200)
    whole = _with_text_chunk(_png(img))
    assert png_damage(whole) == "" and png_damage(np.frombuffer(whole, np.uint8)) == ""
    np.testing.assert_array_equal(decode_color(np.frombuffer(whole, np.uint8))[0], img)
    idat = whole.index(b"IDAT")
    text = whole.index(b"tEXt")
    for at, chunk in ((idat + 40, "IDAT"), (text + 6, "tEXt")):
        bad = bytearray(whole)
        bad[at] ^= 0x10
        why = png_damage(bytes(bad))
        assert why.startswith(f"PNG data damaged (chunk {chunk} at byte {idat - 4 if chunk == 'IDAT' else text - 4}")
        assert "copy the file again" in why
        assert decode_color(np.frombuffer(bytes(bad), np.uint8)) == (None, why)
    # A length field hit: the chunk runs past the file's end chunk (damage, not a cut), or
    # claims the impossible; the signature hit; a chunk type with a backslash shown once.
    bad = bytearray(whole)
    bad[idat - 4] = 0x7F
    assert png_damage(bytes(bad)) == DAMAGED_PNG.format(
        f"chunk IDAT at byte {idat - 4}: its length runs past the file's end chunk"
    )
    bad[idat - 4] = 0xFF
    assert f"chunk IDAT at byte {idat - 4} claims 4" in png_damage(bytes(bad))
    bad = bytearray(whole)
    bad[1] ^= 0x02
    assert png_damage(bytes(bad)) == DAMAGED_PNG.format("its signature, the first 8 bytes")
    assert decode_color(np.frombuffer(bytes(bad), np.uint8))[1].startswith("PNG data damaged (its signature")
    bad = bytearray(whole)
    bad[idat + 3] = ord("\\")
    assert png_damage(bytes(bad)).startswith("PNG data damaged (chunk IDA\\x5c at byte")
    # Cut anywhere, the last byte included; bytes after the end chunk are a trailer, allowed.
    for n in (8, 20, idat + 100, len(whole) - 1):
        assert png_damage(whole[:n]) == CUT_PNG
    assert png_damage(whole + b"\0" * 100) == ""
    assert png_damage(b"") == "" and png_damage(b"GIF89a") == ""  # no PNG: not this check's to say
    assert "libpng" not in capfd.readouterr().err


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(png):
        n = int.from_bytes(png[pos : pos + 4], "big")
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def _build(chunks) -> bytes:
    """A PNG of these (type, body) chunks, each with its right checksum."""
    import struct
    import zlib

    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)) for kind, body in chunks
    )


def test_a_png_breaking_the_chunk_rules_under_right_checksums_is_refused_in_our_words(capfd):
    """What libpng refuses (or warns about) in its own words on stderr, a faulty writer's PNG
    with right checksums: said in one line instead; every valid order still passes."""
    import zlib

    ok = cv2.imencode(".png", _scene(60, 80))[1].tobytes()
    ihdr, idat, iend = _chunks(ok)
    assert (ihdr[0], idat[0], iend[0]) == (b"IHDR", b"IDAT", b"IEND")
    half = len(idat[1]) // 2
    split = [ihdr, (b"IDAT", idat[1][:half]), (b"IDAT", idat[1][half:]), iend]
    assert png_damage(_build(split)) == ""  # image data in two chunks, one after the other
    np.testing.assert_array_equal(decode_color(np.frombuffer(_build(split), np.uint8))[0], _scene(60, 80))
    text = (b"tEXt", b"Comment\0x")
    assert png_damage(_build([ihdr, text, idat, text, iend])) == ""
    bd7 = (b"IHDR", ihdr[1][:8] + bytes([7]) + ihdr[1][9:])
    cases = {
        "bit depth 7 with colour type 2 is no PNG": [bd7, idat, iend],
        "the header chunk IHDR must come first": [text, ihdr, idat, iend],
        "a second header": [ihdr, ihdr, idat, iend],
        "the image data is cut in two by another chunk": [ihdr, split[1], text, split[2], iend],
        "no image data": [ihdr, iend],
        "the end chunk carries data": [ihdr, idat, (b"IEND", b"x")],
        "a critical chunk this software does not know": [ihdr, (b"ABCD", b"1"), idat, iend],
        "the palette comes after the image data": [ihdr, idat, (b"PLTE", bytes(6)), iend],
        "a palette picture without its palette": [(b"IHDR", ihdr[1][:9] + bytes([3]) + ihdr[1][10:]), idat, iend],
    }
    for why, chunks in cases.items():
        got = png_damage(_build(chunks))
        assert got.startswith("PNG data damaged (chunk ") and f": {why})" in got, (why, got)
        assert decode_color(np.frombuffer(_build(chunks), np.uint8)) == (None, got)
    # The image data itself is left to the decoder (inflating it costs most of a decode).
    assert png_damage(_build([ihdr, (b"IDAT", zlib.compress(b"\0" * 10)), iend])) == ""
    assert "libpng" not in capfd.readouterr().err


def test_every_reader_names_a_damaged_png_without_libpngs_words(tmp_path, capfd):
    from scallop.calibration.intrinsics import read_photo
    from scallop.models.dataset import DatasetError, _read_image
    from scallop.vision.camera import CorruptFrameError, read_fluorescence, read_image

    colour = bytearray(_png(_scene(120, 200)))
    colour[colour.index(b"IDAT") + 60] ^= 0x01
    (tmp_path / "x.png").write_bytes(bytes(colour))
    grey = bytearray(_png(_scene(120, 200)[:, :, 1]))
    grey[grey.index(b"IDAT") + 60] ^= 0x01
    (tmp_path / "x.uv.png").write_bytes(bytes(grey))
    with pytest.raises(CorruptFrameError, match=r"x.png: PNG data damaged \(chunk IDAT"):
        read_image(tmp_path / "x.png")
    with pytest.raises(CorruptFrameError, match=r"x.uv.png: PNG data damaged \(chunk IDAT"):
        read_fluorescence(tmp_path / "x.uv.png", (120, 200))
    for flags, uv in ((cv2.IMREAD_COLOR, False), (cv2.IMREAD_UNCHANGED, False), (cv2.IMREAD_UNCHANGED, True)):
        name = "x.uv.png" if uv else "x.png"
        with pytest.raises(DatasetError, match=rf"{name}: PNG data damaged \("):
            _read_image(tmp_path / name, flags, uv=uv)
    assert read_photo(tmp_path / "x.png")[0] is None
    assert main(["detect", "--mm-per-px", "0.5", str(tmp_path / "x.png")]) == 1
    err = capfd.readouterr().err
    assert "x.png: PNG data damaged (chunk IDAT" in err and "libpng" not in err


def test_detect_keeps_a_name_with_a_newline_on_one_line(tmp_path, capfd):
    """A newline in a file's name is shown escaped: every output line is one image or one error."""
    buf = _jpeg(_scene(720, 1280), cv2.IMWRITE_JPEG_QUALITY, 90)
    good, bad = tmp_path / "a\nb.jpg", tmp_path / "c\nd.jpg"
    good.write_bytes(buf.tobytes())
    bad.write_bytes(_damaged(buf).tobytes())
    assert main(["detect", str(good), str(bad), "--mm-per-px", "0.5"]) == 1
    out, err = capfd.readouterr()
    assert out.splitlines()[0].startswith(str(tmp_path / "a\\nb.jpg") + ": ")
    assert err.splitlines() == [ln for ln in err.splitlines() if ln.startswith("scallop detect: error: ")]
    assert len(err.splitlines()) == 1 and "c\\nd.jpg: JPEG data damaged" in err


def test_any_commands_error_stays_on_one_line(tmp_path, capfd):
    """The command line's one error line escapes a newline a name brings in (scallop eval here)."""
    assert main(["eval", str(tmp_path / "no\nset")]) == 3
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scallop eval: error: ") and "no\\nset" in err


def test_a_picture_past_opencvs_own_limit_is_unreadable_not_an_exception():
    """A whole PNG whose header claims 100000x100000 pixels: OpenCV raises its own assertion
    rather than returning None, which reached the user as an internal error where no size
    check came first."""
    import struct
    import zlib

    ihdr, idat, iend = _chunks(cv2.imencode(".png", _scene(8, 8))[1].tobytes())
    body = struct.pack(">II", 100000, 100000) + ihdr[1][8:]
    assert len(body) == 13 and zlib.crc32(b"IHDR" + body) >= 0
    img, why = decode_color(np.frombuffer(_build([(b"IHDR", body), idat, iend]), np.uint8))
    assert img is None and why == ""
