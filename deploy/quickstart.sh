#!/usr/bin/env bash
# deploy/quickstart.sh [DEMO_ARG...] — on a fresh Debian 12 machine:
# install the missing packages, build a Release tree in build-release/ and
# run plexus-demo for a few seconds (default: --seconds 3; any arguments
# are passed to the demo instead).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

px_ensure_packages || exit 1
build="$PX_ROOT/build-release"
px_build "$build" -DCMAKE_BUILD_TYPE=Release -DPLEXUS_TESTS=OFF

if (($# == 0)); then
  set -- --seconds 3
fi
px_log "running plexus-demo $*"
exec "$build/tools/demo/plexus-demo" "$@"
