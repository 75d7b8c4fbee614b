"""Output files checked before the work that fills them (``scallop eval --report``,
``scallop labels export --out``, ``scallop detect --annotate``): a slow run must not end in an
error about where it writes."""

from __future__ import annotations

import os
from pathlib import Path

from scallop.errors import DataError


def check_output_dir(path: Path, what: str) -> None:
    """The same as :func:`check_output_file` for a folder that files are written into."""
    _check_writable(path, path, what)


def check_output_file(path: Path, what: str, example: str) -> None:
    """Refuse an output file that could not be written, naming it and why, before the work
    that fills it: a folder in its place, a file where its folder should be, a read-only place.
    ``what``: the file in the message ("the report"); ``example``: a file name to suggest."""
    if path.is_dir():
        raise DataError(f"{path}: cannot write {what}: it is a folder (give a file name, e.g. {example})")
    _check_writable(path, path.parent, what, existing=path if path.exists() else None, keep_folder=False)


def _check_writable(
    shown: Path, folder: Path, what: str, existing: Path | None = None, keep_folder: bool = True
) -> None:
    """``folder`` can take a new file (and ``existing``, a file in it, can be written); errors
    name ``shown``. The folder is made here; with ``keep_folder`` False the folders made are
    removed again after the probe (a file's writer makes them when it writes: a run that fails
    before then leaves no empty folder behind). A probe file is
    created in it and removed again, which is the one test a superuser's permissions cannot
    fool and what a writer that writes a temporary file and renames it needs (a writable file in
    a read-only folder passes an append test but not that)."""

    def refuse(why: str) -> DataError:
        return DataError(f"{shown}: cannot write {what}: {why}")

    above = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if above is not None and not above.is_dir():
        raise refuse(f"{above} is a file, not a folder")
    made: list[Path] = []  # the folders this call made, deepest first: only these are removed
    probe = folder / f".{shown.name}.probe-{os.getpid()}"
    try:
        # One level at a time, so that what is removed again is only what this call made (not
        # a folder another run made meanwhile, nor one it made above a level that failed).
        for level in reversed([folder, *folder.parents]):
            if level.is_dir():
                continue
            try:
                level.mkdir()
                made.insert(0, level)
            except FileExistsError:
                pass
            except OSError as e:
                raise refuse(f"cannot make its folder {folder} ({e.strerror or e})") from None
        if existing is not None:
            with open(existing, "a", encoding="utf-8"):  # appends nothing: the file stays as it is
                pass
        with open(probe, "w", encoding="utf-8"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise refuse(
            f"{e.strerror or e} (check the folder's owner and permissions, or a disk mounted read-only)"
        ) from None
    finally:
        if not keep_folder:
            for p in made:
                try:
                    p.rmdir()
                except OSError:  # something was put there meanwhile: it is not ours to remove
                    break
