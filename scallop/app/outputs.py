"""Output files checked before the work that fills them (``scallop eval --report``,
``scallop labels export --out``): a slow run must not end in an error about where it writes."""

from __future__ import annotations

from pathlib import Path

from scallop.errors import DataError


def check_output_file(path: Path, what: str, example: str) -> None:
    """Refuse an output file that could not be written, naming it and why, before the work
    that fills it: a folder in its place, a file where its folder should be, a read-only place.
    Its folders are made here (the writer would make them anyway); a file that is not there yet
    is created and removed again, which is the one test a superuser's permissions cannot fool.
    ``what``: the file in the message ("the report"); ``example``: a file name to suggest."""
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
    try:
        if path.exists():
            with open(path, "a", encoding="utf-8"):  # appends nothing: the file stays as it is
                pass
        else:
            with open(path, "x", encoding="utf-8"):
                pass
            os.unlink(path)
    except OSError as e:
        raise refuse(
            f"{e.strerror or e} (check the folder's owner and permissions, or a disk mounted read-only)"
        ) from None
