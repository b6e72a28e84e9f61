#!/usr/bin/env bash
# tests/deploy/test_install.sh BUILD_DIR SOURCE_DIR CC [CFLAGS] — what
# README's "build against an installed plexus" promises: `cmake --install`
# into a temporary prefix, then a program built with
# `pkg-config --cflags --libs plexus-mesh`
# (tests/deploy/install_mesh.c: a node with its transport, a standalone
# cluster and the mesh started, an actor asked, everything stopped) links
# and runs, and a core-only program links with `plexus` alone. CC and
# CFLAGS: the build's compiler and sanitizer flags (its libraries need them
# at link time). The prefix is removed at exit.
set -euo pipefail
build="$1"
src="$2"
cc="$3"
read -r -a extra <<<"${4:-}"
command -v pkg-config >/dev/null || { echo "test_install: pkg-config is not installed"; exit 1; }
tmp="$(mktemp -d /tmp/pxt-install-XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
libdir="$(find "$tmp/prefix" -name plexus.pc -printf '%h\n' | head -1)"
[[ -n "$libdir" ]] || { echo "test_install: no plexus.pc installed"; exit 1; }
export PKG_CONFIG_PATH="$libdir"

cat >"$tmp/core.c" <<'C'
#include <stdio.h>
#include <plexus/plexus.h>
int main(void) {
    px_config cfg;
    px_config_init(&cfg);
    px_system *sys = NULL;
    if (px_system_alloc(&sys, &cfg) != PX_OK) {
        return 1;
    }
    px_system_free(sys);
    puts("install_core: ok");
    return 0;
}
C
# shellcheck disable=SC2046 # pkg-config's words are meant to split
"$cc" -std=c11 "${extra[@]}" -o "$tmp/core" "$tmp/core.c" $(pkg-config --cflags --libs plexus)
"$tmp/core"
# shellcheck disable=SC2046
"$cc" -std=c11 "${extra[@]}" -o "$tmp/mesh" "$src/tests/deploy/install_mesh.c" \
  $(pkg-config --cflags --libs plexus-mesh)
"$tmp/mesh" "$tmp/solo.key"
echo "test_install: ok"
