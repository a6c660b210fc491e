#!/usr/bin/env bash
# Installs every Debian 12 package cowq's build, tests, examples, benchmarks
# and CI use. Idempotent: packages already installed are left alone, and
# nothing is fetched (not even the package lists) when none is missing.
# Run it as root (or as a user with sudo).
set -euo pipefail

packages=(
  g++                 # the default compiler
  clang clang-14      # the sanitizer builds (see .ci/run)
  libclang-rt-14-dev  # clang's ASan/UBSan/TSan runtimes (only recommended by clang-14)
  llvm-14             # llvm-symbolizer-14, for readable sanitizer stack traces
  meson ninja-build pkg-config
  liburing-dev libasio-dev
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev googletest
  libbenchmark-dev
  python3             # .ci/run and the consumer tests
  procps
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup.sh: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "setup.sh: installing ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup.sh: missing packages (${missing[*]}) and not root, no sudo" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=300)
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
  --no-install-recommends "${missing[@]}"
