#!/usr/bin/env bash
# Checks the Debian package as a user gets it: unpacks it (dpkg-deb -x, no root needed, nothing
# installed on this machine) into a temporary root and, from a folder outside the checkout, with
# an empty home and a clean environment, runs the packaged `lightunet process` on the phantom (the
# built-in weights), `live --list` (the built-in pipelines, and the packaged copies seen as the
# same), and with --plugin `gst-inspect-1.0 lightunet` with GST_PLUGIN_PATH at the unpacked
# plugin folder.
#
# Usage: scripts/check-package.sh [--plugin] [DEB]   (DEB: target/debian/lightunet_<version>_<arch>.deb)
set -euo pipefail
cd "$(dirname "$0")/.."

plugin=0
deb=""
for arg in "$@"; do
  case "$arg" in
    --plugin) plugin=1 ;;
    -*) echo "usage: scripts/check-package.sh [--plugin] [DEB]" >&2; exit 2 ;;
    *) deb=$arg ;;
  esac
done
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$deb" ] || deb="target/debian/lightunet_${version}_$(dpkg --print-architecture).deb"
deb=$(readlink -f "$deb")
[ -f "$deb" ] || { echo "check-package: no $deb (run scripts/package.sh)" >&2; exit 1; }
multiarch=$(gcc -print-multiarch)

fail() { echo "check-package: $*" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root="$tmp/root"
dpkg-deb -x "$deb" "$root"
mkdir -p "$tmp/home" "$tmp/config" "$tmp/work"
for f in usr/bin/lightunet usr/share/lightunet/pipelines/phantom-window.toml \
         usr/share/doc/lightunet/README.md usr/share/doc/lightunet/model-card.md; do
  [ -f "$root/$f" ] || fail "the package has no /$f"
done
depends=$(dpkg-deb -f "$deb" Depends)
echo "check-package: Depends: $depends"

cd "$tmp/work"
# A user's shell: nothing from this session (no LIGHTUNET_*, no GST_PLUGIN_PATH), an empty home.
as_user() { env -i PATH="$PATH" HOME="$tmp/home" XDG_CONFIG_HOME="$tmp/config" RUST_LOG=info "$@"; }
lightunet="$root/usr/bin/lightunet"

as_user "$lightunet" process phantom:320x240 --frames 10 --device cpu -o out.mp4 2> process.log \
  || { cat process.log >&2; fail "process failed"; }
grep -q "weights: embedded lighter_at1_busi.safetensors" process.log || { cat process.log >&2; fail "process did not use the embedded weights"; }
[ -s out.mp4 ] || fail "process wrote no out.mp4"
echo "check-package: process on the phantom: $(stat -c %s out.mp4) bytes of annotated video"

as_user "$lightunet" live --list > list.txt
shipped=$(ls "$root/usr/share/lightunet/pipelines" | wc -l)
embedded=$(grep -c "^ *from embedded$" list.txt || true)
[ "$embedded" -eq "$shipped" ] || { cat list.txt >&2; fail "live --list shows $embedded embedded pipelines, the package has $shipped"; }
as_user env LIGHTUNET_PIPELINES="$root/usr/share/lightunet/pipelines" "$lightunet" live --list > list2.txt
same=$(grep -c "the same as the embedded one" list2.txt || true)
[ "$same" -eq "$shipped" ] || { cat list2.txt >&2; fail "the packaged pipelines differ from the embedded ones"; }
echo "check-package: live --list: $shipped pipelines, the packaged copies the same as the embedded ones"

if [ "$plugin" = 1 ]; then
  plugin_dir="$root/usr/lib/$multiarch/gstreamer-1.0"
  [ -f "$plugin_dir/libgstlightunet.so" ] || fail "the package has no /usr/lib/$multiarch/gstreamer-1.0/libgstlightunet.so"
  as_user env GST_PLUGIN_PATH="$plugin_dir" gst-inspect-1.0 lightunet > inspect.txt 2>&1 \
    || { cat inspect.txt >&2; fail "gst-inspect-1.0 lightunet failed"; }
  echo "check-package: gst-inspect-1.0 lightunet: $(grep -m1 'Long-name' inspect.txt | sed 's/^ *//')"
fi
echo "check-package: ok ($deb)"
