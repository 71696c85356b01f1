#!/usr/bin/env bash
# Installs, builds and runs every test (what CI runs). Shared data: QFORGE_SHARED_DIR (default ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DQFORGE_SHARED_DIR="$(realpath "${QFORGE_SHARED_DIR:-../shared}")"
cd build && ctest --output-on-failure -j"$(nproc)" --timeout 900
