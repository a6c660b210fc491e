#!/usr/bin/env bash
# Installs what is missing (Debian 12), builds cowq in build-tests and runs
# every test registered with meson (unit tests and consumer tests).
# Extra arguments go to `meson test` (e.g. --suite task, --no-suite consumer).
#
# debugoptimized, not debug: GCC turns C++20 symmetric transfer into a tail
# call only with optimisation, and the suite awaits a million-deep chain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh

builddir=build-tests
setup_args=(--buildtype=debugoptimized)
if [[ -f $builddir/meson-private/coredata.dat ]]; then
  meson configure "${setup_args[@]}" "$builddir" ||
    meson setup --wipe "${setup_args[@]}" "$builddir"
else
  meson setup "${setup_args[@]}" "$builddir"
fi
meson compile -C "$builddir"
meson test -C "$builddir" --print-errorlogs "$@"
