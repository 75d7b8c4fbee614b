#!/usr/bin/env bash
# Install this bundle on a line PC with no network (Debian 12, Python 3.11):
#
#     sudo ./install.sh [--prefix /opt/scallop] [--activate]
#
# Each version goes into its own folder, PREFIX/versions/VERSION (a virtual environment
# installed from the wheels in this bundle only: pip never looks at a package index), beside
# the versions already there. PREFIX/current points to the version in use; it is switched
# (atomically) with --activate, or when no version was installed before. Switching back is
# `scallop service switch OLD_VERSION`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix=/opt/scallop
activate=no
python=python3.11
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --activate) activate=yes; shift ;;
        --python) python="$2"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v "$python" >/dev/null || { echo "install.sh: $python not found: install Debian's python3.11 and python3.11-venv" >&2; exit 2; }
version="$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$here/MANIFEST.json")"
echo "checking the bundle's files ..."
(cd "$here" && sha256sum --quiet -c SHA256SUMS) || { echo "install.sh: the bundle is damaged (checksums differ): copy it again" >&2; exit 3; }
target="$prefix/versions/$version"
if [ -x "$target/bin/scallop" ]; then
    echo "version $version is already installed in $target"
else
    mkdir -p "$prefix/versions"
    rm -rf "$target"
    # A half-made version folder is never left behind to be taken for an installed one.
    trap 'rm -rf "$target"' ERR
    "$python" -m venv "$target"
    PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$target/bin/pip" install -q --no-index \
        --no-cache-dir --find-links "$here/wheels" "scallop-uro-line==$version"
    trap - ERR
fi
"$target/bin/scallop" service check-install
if [ "$activate" = yes ] || [ ! -e "$prefix/current" ]; then
    ln -sfn "versions/$version" "$prefix/current.new"
    mv -T "$prefix/current.new" "$prefix/current"
    echo "version $version is now the current one ($prefix/current)"
else
    echo "version $version installed beside the current one; switch with: scallop service switch $version"
fi
