#!/usr/bin/env bash
# Every test, as CI runs them. Installs the system packages first. Tests that need ../shared
# (BUSI, the scanner clip, reference weights) say so and skip when it is absent.
#
# The whole workspace: the library and CLI, and the GStreamer element (gst-plugin-lightunet). The
# element's gst-launch-1.0 tests load target/release/libgstlightunet.so, which `cargo test`
# builds for them too; it is built first here all the same, with the binary, so that the tests
# never meet a missing or stale library (they fail, naming it, when it is older than their code).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo build --release --workspace
cargo test --release --workspace "$@"
