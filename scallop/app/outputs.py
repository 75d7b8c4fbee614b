"""Output files checked before the work that fills them (``scallop eval --report``,
``scallop labels export --out``): a slow run must not end in an error about where it writes."""

from __future__ import annotations

from pathlib import Path

from scallop.errors import DataError


def check_output_dir(path: Path, what: str) -> None:
    """The same for a folder that files are written into (``scallop detect --annotate``)."""
    above = next((p for p in [path, *path.parents] if p.exists()), None)
    if above is not None and not above.is_dir():
        raise DataError(f"{path}: cannot write {what}: {above} is a file, not a folder")
    check_output_file(path / "probe", what, "")


def check_output_file(path: Path, what: str, example: str) -> None:
    """Refuse an output file that could not be written, naming it and why, before the work
    that fills it: a folder in its place, a file where its folder should be, a read-only place.
    Its folders are made here (the writer would make them anyway). A probe file is created
    beside it and removed again, which is the one test a superuser's permissions cannot fool and
    what a writer that writes a temporary file and renames it needs (a writable file in a
    read-only folder passes an append test but not that). ``what``: the file in the message
    ("the report"); ``example``: a file name to suggest."""
    import os

    def refuse(why: str) -> DataError:
        return DataError(f"{path}: cannot write {what}: {why}")

    if path.is_dir():
        raise refuse(f"it is a folder (give a file name, e.g. {example})")
    above = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if above is not None and not above.is_dir():
        raise refuse(f"{above} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise refuse(f"cannot make its folder {path.parent} ({e.strerror or e})") from None
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
    try:
        if path.exists():
            with open(path, "a", encoding="utf-8"):  # appends nothing: the file stays as it is
                pass
        with open(probe, "w", encoding="utf-8"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise refuse(
            f"{e.strerror or e} (check the folder's owner and permissions, or a disk mounted read-only)"
        ) from None
