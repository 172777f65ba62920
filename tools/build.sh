#!/usr/bin/env bash
# Incremental rebuild of the extensions in place (after 'pip install -e . --no-build-isolation').
# Serialized with a lock so that parallel builds never share the ninja build tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export MAX_JOBS="${MAX_JOBS:-2}"
exec flock /tmp/ilsgan-build.lock python setup.py -q build_ext --inplace "$@"
