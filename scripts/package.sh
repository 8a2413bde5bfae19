#!/usr/bin/env bash
# Builds the Debian package target/debian/lightunet_<version>_<arch>.deb from the release build:
#   /usr/bin/lightunet                                        the binary (weights and pipelines built in)
#   /usr/lib/<multiarch>/gstreamer-1.0/libgstlightunet.so     the GStreamer element `lightunet`
#   /usr/share/lightunet/pipelines/*.toml                     the named pipelines (copies of the embedded ones, to edit)
#   /usr/share/doc/lightunet/                                 README, model card, pipelines README, copyright
#
# Usage: scripts/package.sh [--no-plugin]
#   --no-plugin  package without the GStreamer plugin; without it, a missing
#                target/release/libgstlightunet.so stops the script.
#
# Built with dpkg-deb from a staged root, not cargo-deb: dpkg-deb comes with dpkg on every
# Debian/Ubuntu machine, while cargo-deb would be one more crate tree to compile in CI (minutes on
# the 2-core runner) for what is here a dozen lines. Before packaging, the script checks what is
# shipped: no debug info, at most 40 MB, no path of the build machine (the checkout, /work/,
# ../shared) in the binary, and every shared library it links to provided by a package in Depends.
# It prints the binary and package sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

plugin=1
for arg in "$@"; do
  case "$arg" in
    --no-plugin) plugin=0 ;;
    *) echo "usage: scripts/package.sh [--no-plugin]" >&2; exit 2 ;;
  esac
done

die() { echo "package: $*" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "no version in Cargo.toml"
arch=$(dpkg --print-architecture)
multiarch=$(gcc -print-multiarch)
[ -n "$multiarch" ] || die "gcc -print-multiarch gave nothing (install gcc: scripts/setup.sh)"

deb="target/debian/lightunet_${version}_${arch}.deb"
rm -f "$deb"  # never leave an older package behind when this one fails

if [ "$plugin" = 1 ]; then
  cargo build --release --workspace --quiet
else
  cargo build --release --quiet
fi
bin=target/release/lightunet
so=target/release/libgstlightunet.so
if [ "$plugin" = 1 ] && [ ! -f "$so" ]; then
  die "the GStreamer plugin $so was not built: gst-plugin-lightunet/ is not a workspace member in this checkout. Pass --no-plugin to package without it."
fi

# What is shipped: no debug info, within the size budget, no build-machine paths.
if readelf -S "$bin" | grep -q '\.debug_info'; then
  die "$bin has debug info: the release profile must not have it (Cargo.toml)"
fi
bin_bytes=$(stat -c %s "$bin")
max_bytes=$((40 * 1000 * 1000))
[ "$bin_bytes" -le "$max_bytes" ] || die "$bin is $bin_bytes bytes, over the $max_bytes budget"
shipped=("$bin")
[ "$plugin" = 1 ] && shipped+=("$so")
for f in "${shipped[@]}"; do
  leaks=$(strings -n 6 "$f" | grep -F -e /work/ -e shared/anchors -e "$(pwd)" | sort -u | head -n 5 || true)
  [ -z "$leaks" ] || die "$f names paths of the build machine:
$leaks"
done

# Depends. The libraries come from dpkg-shlibdeps on Debian 12 (2026-11-30: libc6 (>= 2.34),
# libgcc-s1 (>= 4.2), libglib2.0-0 (>= 2.18.0), libgstreamer-plugins-base1.0-0 (>= 1.0.0),
# libgstreamer1.0-0 (>= 1.14.0)); the check below fails when the binary or the plugin links a
# library whose package is not listed. The GStreamer plugins are needed at run time, not linked:
# base (videoconvert, videoscale, appsrc/appsink, decodebin, videotestsrc), good (MP4/Matroska/
# AVI muxers, VP8, JPEG, PNG, autovideosink, UDP/RTP, V4L2), bad (h264parse, SRT, MPEG-TS),
# ugly (x264enc, which brings libx264), libav (H.264 and other decoders).
libs="libc6 (>= 2.34), libgcc-s1 (>= 4.2), libglib2.0-0 (>= 2.18.0), libgstreamer1.0-0 (>= 1.14.0), libgstreamer-plugins-base1.0-0 (>= 1.0.0)"
plugins="gstreamer1.0-plugins-base, gstreamer1.0-plugins-good, gstreamer1.0-plugins-bad, gstreamer1.0-plugins-ugly, gstreamer1.0-libav"
depends="$libs, $plugins"
for f in "${shipped[@]}"; do
  for lib in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=$(ldd "$f" | awk -v l="$lib" '$1 == l && $2 == "=>" { print $3 } $1 ~ "/"l"$" { print $1 }' | head -n 1)
    [ -n "$path" ] || die "$f needs $lib, which ldd does not find"
    real=$(readlink -f "$path")
    pkg=$( (dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "$path" 2>/dev/null || true) | head -n 1)
    pkg=${pkg%%:*}
    [ -n "$pkg" ] || die "no package provides $real ($lib, needed by $f)"
    case ", $depends," in
      *", $pkg "*|*", $pkg,"*) ;;
      *) die "$f links $lib from $pkg, which is not in Depends: add it in scripts/package.sh" ;;
    esac
  done
done

stage=target/debian/root
rm -rf "$stage"
install -D -m 755 "$bin" "$stage/usr/bin/lightunet"
if [ "$plugin" = 1 ]; then
  install -D -m 644 "$so" "$stage/usr/lib/$multiarch/gstreamer-1.0/libgstlightunet.so"
fi
install -d "$stage/usr/share/lightunet/pipelines"
install -m 644 pipelines/*.toml "$stage/usr/share/lightunet/pipelines/"
doc="$stage/usr/share/doc/lightunet"
install -D -m 644 README.md "$doc/README.md"
install -D -m 644 pretrained_models/README.md "$doc/model-card.md"
install -D -m 644 pipelines/README.md "$doc/pipelines.md"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lightunet

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
Comment: The built-in weights (Lighter U-net@1) were trained on BUSI: Al-Dhabyani, Gomaa,
 Khaled, Fahmy, "Dataset of breast ultrasound images", Data in Brief 28 (2020) 104863,
 doi:10.1016/j.dib.2019.104863. See model-card.md.
EOF

install -d "$stage/DEBIAN"
installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: lightunet
Version: $version
Architecture: $arch
Maintainer: lightunet maintainers <maintainers@lightunet.invalid>
Installed-Size: $installed_kb
Depends: $depends
Recommends: gstreamer1.0-x, gstreamer1.0-tools
Section: science
Priority: optional
Description: real-time lesion segmentation in ultrasound video (Light U-net family)
 Finds and outlines lesions in ultrasound images and video in real time with the
 Light U-net family of networks (U-net, Light U-net, Lighter U-net@C), on the CPU.
 Recorded and live modes (capture cards, files, RTP, SRT), per-frame metadata and
 latency reports, offline prediction with metrics, training. Lighter U-net@1
 weights trained on BUSI are built in.
EOF
if [ "$plugin" = 1 ]; then
  echo " The GStreamer element \`lightunet\` is included." >> "$stage/DEBIAN/control"
fi

# gzip, not dpkg-deb's default xz: measured on the 2-core machine under load, xz took 25 s and
# gave 10.7 MB, gzip 0.7 s and 12.2 MB (the weights barely compress either way).
dpkg-deb -Zgzip --root-owner-group --build "$stage" "$deb" >/dev/null
echo "package: binary $bin: $bin_bytes bytes ($((bin_bytes / 1000000)) MB)"
[ "$plugin" = 1 ] && echo "package: plugin $so: $(stat -c %s "$so") bytes"
echo "package: $deb: $(stat -c %s "$deb") bytes ($(( $(stat -c %s "$deb") / 1000000 )) MB), installed $installed_kb KiB"
[ "$plugin" = 1 ] || echo "package: built WITHOUT the GStreamer plugin (--no-plugin)"
