#!/usr/bin/env bash
# Generate the Python stubs of proto/meridian/v1 with grpcio-tools and print their directory.
# Usage: clients/python/generate.sh [OUT_PARENT]   (default: clients/python/build/generated)
# Requires: python3 -m pip install -r clients/python/requirements.txt
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ $# -ge 1 ]]; then export MERIDIAN_PY_BUILD_DIR="$1"; fi
cd "$here"
exec python3 -c "from meridian_client import stubs; print(stubs.generate())"
