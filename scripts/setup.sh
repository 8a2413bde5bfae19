#!/usr/bin/env bash
# Installs the system packages lightunet needs on Debian/Ubuntu: GStreamer (core, base, good, bad,
# ugly, libav, x264) with development headers, pkg-config and a C toolchain. (Only the CUDA build,
# scripts/cuda-build.sh, and the anchors use Python 3 with venv.) Idempotent: does nothing when
# everything is already there. `--test` adds what only the tests use: Xvfb, a virtual X display
# for the window-sink test, and g++, which runs the CUDA kernels on the CPU
# (tests/cuda_kernels_on_cpu.rs).
set -euo pipefail
pkgs=(
  pkg-config gcc libc6-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x
  libx264-dev xz-utils
)
[ "${1:-}" = "--test" ] && pkgs+=(xvfb g++)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
