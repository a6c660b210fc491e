#!/usr/bin/env bash
# Installs what is missing (Debian 12), builds cowq and its examples in
# build-demo (no tests, no benchmarks) and runs the demo; arguments are
# passed to the demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh >&2

builddir=build-demo
setup_args=(--buildtype=debugoptimized -Dtests=disabled -Dbenchmarks=disabled
            -Dexamples=enabled)
if [[ -f $builddir/meson-private/coredata.dat ]]; then
  meson configure "${setup_args[@]}" "$builddir" >&2 ||
    meson setup --wipe "${setup_args[@]}" "$builddir" >&2
else
  meson setup "${setup_args[@]}" "$builddir" >&2
fi
meson compile -C "$builddir" >&2
exec "$builddir/examples/demo" "$@"
