#!/usr/bin/env bash
# Every test, as CI runs them. Installs the system packages first. Tests that need ../shared
# (BUSI, the scanner clip, reference weights) say so and skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo test --release "$@"
