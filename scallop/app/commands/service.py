"""``scallop service``: the line on a plant PC — an offline bundle, the systemd unit, versions.

A line PC has no internet. ``bundle`` builds, on a connected machine, a folder with a wheel
for every dependency, the product (the model is inside its wheel), an installer and a
manifest with checksums; ``install.sh`` from that folder installs it on the line PC with pip
never looking at an index. Versions are installed side by side under a prefix; ``switch``
chooses the one in use (and goes back), ``versions`` lists them. ``unit`` prints the systemd
unit that supervises the line (docs/plant-pc.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from scallop.app.version import program_version
from scallop.errors import ConfigError, DataError, DeviceError

DIST = "scallop-uro-line"
DEFAULT_PREFIX = "/opt/scallop"


def register(sub) -> None:
    p = sub.add_parser(
        "service",
        help="the line on a plant PC: offline bundle, systemd unit, installed versions",
        description=(
            "Install and run the line on a plant PC (docs/plant-pc.md).\n\n"
            "examples:\n"
            "  scallop service bundle -o scallop-bundle        # on a connected machine\n"
            "  sudo scallop-bundle/install.sh --activate        # on the line PC, no network needed\n"
            "  scallop service unit > /etc/systemd/system/scallop.service\n"
            "  scallop service versions                         # installed side by side\n"
            "  sudo scallop service switch 0.1.0                # go back to a version"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp = p.add_subparsers(dest="service", metavar="ACTION")
    sp.required = True

    b = sp.add_parser("bundle", help="build an offline install bundle (needs network: run it on a connected PC)")
    b.add_argument("-o", "--out", required=True, help="folder to create")
    b.add_argument("--source", default=".", help="the product's source folder (default: here)")
    b.add_argument("--extras", default="", help="optional extras to include, e.g. 'train'")
    b.set_defaults(func=run_bundle)

    u = sp.add_parser("unit", help="print the systemd unit for this install")
    u.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"where versions are installed (default {DEFAULT_PREFIX})")
    u.add_argument("--config", default="/etc/scallop/line.toml", help="the line's configuration file")
    u.add_argument("--user", default="scallop", help="the system user the line runs as")
    u.set_defaults(func=run_unit)

    v = sp.add_parser("versions", help="list the installed versions and the current one")
    v.add_argument("--prefix", default=DEFAULT_PREFIX)
    v.set_defaults(func=run_versions)

    s = sp.add_parser("switch", help="make an installed version the current one (restart the service after)")
    s.add_argument("version")
    s.add_argument("--prefix", default=DEFAULT_PREFIX)
    s.set_defaults(func=run_switch)

    c = sp.add_parser("check-install", help="check this installation: every package imports, the model runs")
    c.set_defaults(func=run_check_install)


# ---------------------------------------------------------------------------- bundle
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _clean_copy(src: Path, dst: Path) -> Path:
    """The files git would commit (tracked, or new and not ignored), copied to ``dst``: a
    build folder left beside the sources could otherwise carry deleted modules into the wheel.
    Outside a git checkout (an unpacked source archive) the folder is used as it is."""
    r = subprocess.run(["git", "-C", str(src), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True)
    if r.returncode != 0:
        return src
    for name in r.stdout.decode().split("\0"):
        if name and (src / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)
    return dst


def run_bundle(args) -> int:
    src = Path(args.source).resolve()
    if not (src / "pyproject.toml").is_file():
        raise ConfigError(f"--source {args.source}: no pyproject.toml there (run it in the product's source folder)")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {args.out}: the folder exists and is not empty")
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"building wheels for {src} and every dependency into {wheels} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="scallop-bundle-") as tmp:
        clean = _clean_copy(src, Path(tmp) / "src")
        target = f"{clean}[{args.extras}]" if args.extras else str(clean)
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), target]
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise DeviceError("pip could not build the wheels (is the package index reachable?): " + " / ".join(tail))
    ours = sorted(wheels.glob("scallop_uro_line-*.whl"))
    if len(ours) != 1:
        raise DataError(f"{wheels}: expected one scallop_uro_line wheel, found {len(ours)}")
    version = ours[0].name.split("-")[1]
    inst = out / "install.sh"
    inst.write_bytes(resources.files("scallop.app.deploy").joinpath("install.sh").read_bytes())
    inst.chmod(0o755)
    files = sorted([inst, *wheels.glob("*.whl")])
    manifest = {
        "product": DIST,
        "version": version,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "extras": args.extras,
        "files": {str(f.relative_to(out)): _sha256(f) for f in files},
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "SHA256SUMS").write_text("".join(f"{h}  {name}\n" for name, h in manifest["files"].items()))
    size = sum(f.stat().st_size for f in files) / 1e6
    print(
        f"bundle {out}: {DIST} {version}, {len(files) - 1} wheels, {size:.0f} MB, "
        f"{time.monotonic() - t0:.0f} s; on the line PC: sudo {out}/install.sh --activate"
    )
    return 0


# ---------------------------------------------------------------------------- unit
def unit_text(prefix: str, config: str, user: str) -> str:
    for name, value in (("--prefix", prefix), ("--config", config)):
        if not os.path.isabs(value):
            raise ConfigError(f"{name} {value}: give an absolute path (systemd runs the line from /)")
    if not user.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"--user {user!r}: a system user name (letters, digits, '-', '_')")
    text = resources.files("scallop.app.deploy").joinpath("scallop.service").read_text()
    return text.replace("@PREFIX@", prefix.rstrip("/")).replace("@CONFIG@", config).replace("@USER@", user)


def run_unit(args) -> int:
    sys.stdout.write(unit_text(args.prefix, args.config, args.user))
    return 0


# ---------------------------------------------------------------------------- versions
def installed_versions(prefix: Path) -> tuple[list[str], str | None]:
    """The versions installed under ``prefix`` (sorted) and the current one (None: none)."""
    vdir = prefix / "versions"
    found = sorted(p.name for p in vdir.iterdir() if (p / "bin" / "scallop").exists()) if vdir.is_dir() else []
    cur = prefix / "current"
    current = os.readlink(cur).rstrip("/").rsplit("/", 1)[-1] if cur.is_symlink() else None
    return found, current


def run_versions(args) -> int:
    found, current = installed_versions(Path(args.prefix))
    if not found:
        from scallop.errors import DataError

        raise DataError(f"no versions installed under {args.prefix} (install one with the bundle's install.sh)")
    for v in found:
        print(f"{'*' if v == current else ' '} {v}")
    return 0


def switch(prefix: Path, version: str) -> None:
    found, _ = installed_versions(prefix)
    if version not in found:
        raise ConfigError(
            f"version {version!r} is not installed under {prefix}: installed {', '.join(found) or 'none'}"
        )
    tmp = prefix / "current.new"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path("versions") / version)
    os.replace(tmp, prefix / "current")  # atomic: the service sees the old or the new, never none


def run_switch(args) -> int:
    switch(Path(args.prefix), args.version)
    print(f"{args.version} is now current; restart the line: sudo systemctl restart scallop")
    return 0


# ---------------------------------------------------------------------------- check
def run_check_install(args) -> int:
    import importlib

    import numpy as np

    for pkg in ("scallop.app.line", "scallop.app.web", "scallop.robot.arm", "scallop.vision.pipeline", "scallop.sim"):
        importlib.import_module(pkg)
    from scallop.models.runtime import default_model_path
    from scallop.vision.pipeline import Pipeline, PipelineConfig

    model = default_model_path()
    dets = Pipeline(config=PipelineConfig(threads=1)).detect(np.full((480, 640, 3), 90, np.uint8), mm_per_px=0.5)
    print(
        f"{DIST} {program_version()} on Python {platform.python_version()}: packages import, "
        f"model {Path(model).name} sha256 {_sha256(Path(model))[:16]} runs ({len(dets)} scallops on a blank frame)"
    )
    return 0
