#!/usr/bin/env bash
# tests/deploy/test_deploy.sh PLEXUSD [DEPLOY_DIR] — validates the deploy
# files without a container engine, a cluster or systemd running:
#
#   - deploy/docker-compose.yml: `docker-compose config` accepts it, and its
#     resolved form has the services, the secret, the key volumes, healthy
#     dependencies, healthchecks, the image variables and configs that agree
#     with it; each node's effective config (its mounted file plus its compose
#     environment, through `plexusd --check-config`) is valid and names the
#     service: node.name, node.advertise, admin.listen;
#   - yamllint (deploy/.yamllint) on every YAML file under deploy/;
#   - deploy/k8s/: a schema-less structural check (check_manifests.py);
#   - `plexusd --check-config` on deploy/config/*.yaml,
#     deploy/systemd/plexusd.yaml and the ConfigMap's plexusd.yaml;
#   - deploy/Dockerfile: base images as ARGs, two stages, a non-root USER,
#     HEALTHCHECK, ENTRYPOINT plexusd, runtime packages covering PLEXUSD's
#     libraries; .dockerignore;
#   - deploy/systemd/plexusd.service: `systemd-analyze verify` (when
#     installed) and its hardening.
#
# Prints one "ok: ..." or "FAIL: ..." line per check (a failure's details
# indented below it) and a summary; exits 1 if any check failed, 2 on usage.
# DEPLOY_DIR (default: this repository's deploy/) lets a copy be checked.
set -euo pipefail

if (($# < 1 || $# > 2)) || [[ ! -x "$1" ]]; then
  echo "usage: $0 PLEXUSD [DEPLOY_DIR]   (PLEXUSD: the plexusd binary)" >&2
  exit 2
fi
plexusd="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deploy="$(cd "${2:-$here/../../deploy}" && pwd)"
root="$(dirname "$deploy")"
checker="$here/check_manifests.py"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' 'a test cluster secret, 16 bytes or more' >"$tmp/secret"
chmod 600 "$tmp/secret"

passed=0
failed=0
ok() {
  printf 'ok: %s\n' "$1"
  passed=$((passed + 1))
}
fail() {
  printf 'FAIL: %s\n' "$1"
  if [[ -n "${2:-}" ]]; then
    printf '%s\n' "$2" | sed 's/^/    /'
  fi
  failed=$((failed + 1))
}
# check NAME CMD... — ok when CMD exits 0, else FAIL with its output.
check() {
  local name="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    ok "$name"
  else
    fail "$name" "$out"
  fi
}
# quiet NAME CMD... — as check, but CMD must also print nothing.
quiet() {
  local name="$1" out rc=0
  shift
  out="$("$@" 2>&1)" || rc=$?
  if ((rc == 0)) && [[ -z "$out" ]]; then
    ok "$name"
  else
    fail "$name" "exit $rc${out:+: $out}"
  fi
}
# have TOOL WHAT — true if TOOL is on PATH; else one FAIL for the checks
# that need it (WHAT says which and where the tool comes from).
have() {
  if command -v "$1" >/dev/null 2>&1; then
    return 0
  fi
  fail "$2: $1 is not installed"
  return 1
}
# plexusd --check-config with no PLEXUS_* from this environment, so that
# only the file, ENV... and the flags count: check_config [ENV...] -- ARGS...
check_config() {
  local envs=()
  while [[ "$1" != "--" ]]; do
    envs+=("$1")
    shift
  done
  shift
  env -i PATH="$PATH" ${envs[@]+"${envs[@]}"} "$plexusd" --check-config "$@"
}
# need PAT TEXT MSG — in a check function with a local bad: when no line of
# TEXT matches the ERE PAT, prints MSG and sets bad=1 (bash's dynamic scoping
# reaches the caller's local). Returns 0 either way.
need() {
  grep -Eq -- "$1" <<<"$2" || {
    echo "$3"
    bad=1
  }
}
# has_value OUTPUT KEY VALUE — OUTPUT (of --check-config) sets KEY to VALUE.
has_value() {
  grep -Eq "^$2 = $3( |\$)" <<<"$1"
}

py_ok=false
if have python3 "compose and k8s structure (python3, python3-yaml)"; then
  if python3 -c 'import yaml' 2>/dev/null; then
    py_ok=true
  else
    fail "compose and k8s structure: python3 has no yaml module (python3-yaml)"
  fi
fi

# ---- docker-compose ---------------------------------------------------------
compose="$deploy/docker-compose.yml"
if have docker-compose "compose checks (Debian package docker-compose)"; then
  # The variables the file reads, unset: their defaults are what is checked.
  dc() {
    env -u ETCD_IMAGE -u BUILD_IMAGE -u RUN_IMAGE -u PLEXUS_IMAGE \
      docker-compose --project-directory "$deploy" -f "$compose" "$@"
  }
  check "docker-compose config -q accepts deploy/docker-compose.yml" dc config -q
  if dc config >"$tmp/compose.yml" 2>"$tmp/compose.err" && $py_ok; then
    check "compose: services etcd, node1, node2, node3, client (built from deploy/Dockerfile)" \
      python3 "$checker" compose-services "$tmp/compose.yml"
    check "compose: the secret cluster-secret (an example file) on every node" \
      python3 "$checker" compose-secret "$tmp/compose.yml"
    check "compose: a named key volume per node at /var/lib/plexus, configs mounted" \
      python3 "$checker" compose-volumes "$tmp/compose.yml"
    check "compose: every depends_on has condition service_healthy; nodes wait for etcd, client for the nodes" \
      python3 "$checker" compose-depends "$tmp/compose.yml"
    check "compose: healthchecks (nodes /healthz, etcd endpoint health)" \
      python3 "$checker" compose-healthchecks "$tmp/compose.yml"
    check "compose: default images (etcd v3.5.9, debian:12, debian:12-slim)" \
      python3 "$checker" compose-images "$tmp/compose.yml" \
      quay.io/coreos/etcd:v3.5.9 debian:12 debian:12-slim
    if ETCD_IMAGE=local/etcd:t BUILD_IMAGE=local/build:t RUN_IMAGE=local/run:t \
      docker-compose --project-directory "$deploy" -f "$compose" config \
      >"$tmp/compose-vars.yml" 2>&1; then
      check "compose: ETCD_IMAGE, BUILD_IMAGE, RUN_IMAGE reach the etcd image and the build args" \
        python3 "$checker" compose-images "$tmp/compose-vars.yml" \
        local/etcd:t local/build:t local/run:t
    else
      fail "compose: config with ETCD_IMAGE, BUILD_IMAGE, RUN_IMAGE set" "$(cat "$tmp/compose-vars.yml")"
    fi
    check "compose: the configs agree (secret and key paths, etcd, roles for role: placement, the workload's target)" \
      python3 "$checker" compose-wiring "$tmp/compose.yml"
    # Each node's effective config: its file plus its compose environment.
    while IFS=$'\t' read -r svc cfg envs; do
      name="compose $svc: plexusd --check-config of ${cfg#"$root/"} with its environment"
      [[ -n "$cfg" && -f "$cfg" ]] || {
        fail "$name" "no config mounted"
        continue
      }
      IFS=$'\t' read -r -a envv <<<"$envs"
      rc=0
      out="$(check_config ${envv[@]+"${envv[@]}"} -- --config "$cfg" --secret-file "$tmp/secret" 2>&1)" || rc=$?
      if ((rc != 0)); then
        fail "$name" "exit $rc: $out"
      elif ! has_value "$out" node.name "$svc" ||
        ! has_value "$out" node.advertise "tcp://$svc:7100" ||
        ! has_value "$out" admin.listen "tcp://$svc:7200"; then
        fail "$name" "node.name, node.advertise, admin.listen are not $svc, tcp://$svc:7100, tcp://$svc:7200:
$(grep -E '^(node\.name|node\.advertise|admin\.listen) ' <<<"$out")"
      else
        ok "$name: node $svc advertises tcp://$svc:7100"
      fi
    done < <(python3 "$checker" compose-nodes "$tmp/compose.yml")
  elif $py_ok; then
    fail "docker-compose config" "$(cat "$tmp/compose.err")"
  fi
fi

# ---- yamllint ---------------------------------------------------------------
if have yamllint "yamllint of deploy/ (Debian package yamllint)"; then
  mapfile -t yamls < <(find "$deploy" -type f \( -name '*.yaml' -o -name '*.yml' -o -name .yamllint \) | sort)
  check "yamllint --strict (deploy/.yamllint) on ${#yamls[@]} YAML files under deploy/" \
    yamllint --strict -c "$deploy/.yamllint" "${yamls[@]}"
fi

# ---- kubernetes -------------------------------------------------------------
if $py_ok; then
  k8s="$deploy/k8s"
  check "k8s: every document has apiVersion, kind, metadata.name; ConfigMap, Secret, Services, StatefulSet, etcd Deployment" \
    python3 "$checker" k8s-docs "$k8s"
  check "k8s: the StatefulSet's serviceName is a headless Service (clusterIP None) selecting its pods; a client Service" \
    python3 "$checker" k8s-headless "$k8s"
  check "k8s: readinessProbe /readyz, livenessProbe /healthz on declared ports" \
    python3 "$checker" k8s-probes "$k8s"
  check "k8s: runAsNonRoot, runAsUser 10001, no privilege escalation, resources" \
    python3 "$checker" k8s-security "$k8s"
  check "k8s: volumeClaimTemplates mounted at /var/lib/plexus" \
    python3 "$checker" k8s-keys "$k8s"
  check "k8s: env: node name from metadata.name, advertise on the headless Service, \$(VAR)s defined before use" \
    python3 "$checker" k8s-env "$k8s"
  check "k8s: the ConfigMap's plexusd.yaml parses and agrees (Secret, key volume, etcd Service, grace above drain)" \
    python3 "$checker" k8s-wiring "$k8s"
  if python3 "$checker" k8s-config "$k8s" >"$tmp/k8s-plexusd.yaml" 2>"$tmp/k8s.err"; then
    configs=("$tmp/k8s-plexusd.yaml")
  else
    fail "k8s: the ConfigMap's plexusd.yaml" "$(cat "$tmp/k8s.err")"
    configs=()
  fi
else
  configs=()
fi

# ---- plexusd --check-config on every example config --------------------------
for f in "$deploy"/config/*.yaml "$deploy/systemd/plexusd.yaml" ${configs[@]+"${configs[@]}"}; do
  label="${f#"$root/"}"
  [[ "$f" == "$tmp/k8s-plexusd.yaml" ]] && label="the ConfigMap's plexusd.yaml (deploy/k8s)"
  # The secret is a test file; a name is given only to a file that leaves
  # it to the environment, so the file's own keys are what is judged.
  args=(--config "$f" --secret-file "$tmp/secret")
  if ! grep -Eq '^[[:space:]]+name:' <(sed -n '/^node:/,/^[^[:space:]#]/p' "$f"); then
    args+=(--name check)
  fi
  rc=0
  out="$(check_config -- "${args[@]}" 2>&1)" || rc=$?
  if ((rc == 0)) && grep -q '^config ok$' <<<"$out"; then
    ok "plexusd --check-config: $label"
  else
    fail "plexusd --check-config: $label" "exit $rc: $out"
  fi
done

# ---- Dockerfile ---------------------------------------------------------------
df="$deploy/Dockerfile"
dockerfile_structure() {
  [[ -f "$df" ]] || {
    echo "no $df"
    return 1
  }
  # Instructions only: continuation lines joined, comments dropped.
  local ins bad=0
  ins="$(sed -e '/^[[:space:]]*#/d' "$df" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta' | sed -e '/^[[:space:]]*$/d')"
  local first_from
  first_from="$(grep -n -i -m1 '^FROM ' <<<"$ins" | cut -d: -f1)"
  for a in BUILD_IMAGE RUN_IMAGE; do
    local n
    n="$(grep -n -E -m1 "^ARG $a=" <<<"$ins" | cut -d: -f1)"
    if [[ -z "$n" || -z "$first_from" || "$n" -gt "$first_from" ]]; then
      echo "no ARG $a=... before the first FROM"
      bad=1
    fi
  done
  local froms
  froms="$(grep -i '^FROM ' <<<"$ins" || true)"
  if [[ "$(grep -c . <<<"$froms")" -ne 2 ]]; then
    echo "expected two FROM stages, got: $froms"
    bad=1
  fi
  need '^FROM \$\{?BUILD_IMAGE\}? AS [A-Za-z0-9_-]+$' "$froms" \
    "the first stage is not FROM \${BUILD_IMAGE} AS NAME"
  need '^FROM \$\{?RUN_IMAGE\}?$' "$froms" "the last stage is not FROM \${RUN_IMAGE}"
  local run_stage user
  run_stage="$(sed -n '/^FROM \${\{0,1\}RUN_IMAGE/,$p' <<<"$ins")"
  need 'cmake --install' "$ins" "the build stage does not cmake --install"
  local opt
  for opt in -DCMAKE_BUILD_TYPE=Release -DPLEXUS_TESTS=OFF -DPLEXUS_BENCH=OFF; do
    need "$opt" "$ins" "the build stage's cmake has no $opt"
  done
  need '^COPY --from=[A-Za-z0-9_-]+ .*plexusd' "$run_stage" \
    "the run stage does not copy plexusd from the build stage"
  user="$(grep -E '^USER ' <<<"$run_stage" | tail -1 | awk '{print $2}')"
  if [[ -z "$user" || "$user" == root || "$user" == 0 || "$user" == 0:* || "$user" == root:* ]]; then
    echo "the run stage's USER is '${user:-unset}', not a non-root user"
    bad=1
  fi
  need '^HEALTHCHECK .*CMD .*/healthz' "$run_stage" "no HEALTHCHECK on /healthz"
  need '^ENTRYPOINT \["(/usr/local/bin/)?plexusd"\]$' "$run_stage" "ENTRYPOINT is not [\"plexusd\"]"
  need '^CMD .*/etc/plexus/plexusd\.yaml' "$run_stage" \
    "the default CMD does not read /etc/plexus/plexusd.yaml"
  for p in 7100 7200 9100; do
    need "^EXPOSE .*\\b$p\\b" "$run_stage" "port $p not EXPOSEd"
  done
  local src
  while read -r src; do
    [[ "$src" == . || -e "$root/$src" ]] || {
      echo "COPY source $src does not exist"
      bad=1
    }
  done < <(grep -E '^COPY [^-]' <<<"$ins" | awk '{for (i = 2; i < NF; i++) print $i}')
  local di="$root/.dockerignore"
  if [[ ! -f "$di" ]] || ! grep -Eqx '/?\.git/?' "$di" || ! grep -Eqx '/?build\*/?' "$di"; then
    echo ".dockerignore at the repository root does not exclude .git and build*"
    bad=1
  fi
  return "$bad"
}
check "Dockerfile: ARG BUILD_IMAGE/RUN_IMAGE before two FROM stages, Release install, non-root USER, HEALTHCHECK /healthz, ENTRYPOINT plexusd, ports; .dockerignore" \
  dockerfile_structure

# Every library plexusd needs (its NEEDED entries, mapped to Debian packages
# on this Debian host) is installed by the run stage.
dockerfile_runtime() {
  local run_stage pkgs missing=() lib pkg
  run_stage="$(sed -n '/^FROM \${\{0,1\}RUN_IMAGE/,$p' "$df" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta')"
  pkgs="$(grep -E 'apt-get install' <<<"$run_stage" | tr ' ' '\n')"
  while read -r lib; do
    case "$lib" in
      libc.so.* | ld-linux* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | \
        libasan.so.* | libubsan.so.* | libtsan.so.* | libgcc_s.so.*) continue ;;
    esac
    pkg="$(dpkg -S "*/$lib" 2>/dev/null | head -1 | cut -d: -f1)"
    if [[ -z "$pkg" ]]; then
      missing+=("$lib (no Debian package found)")
    elif ! grep -qx "$pkg" <<<"$pkgs"; then
      missing+=("$lib ($pkg)")
    fi
  done < <(readelf -d "$plexusd" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  if ((${#missing[@]})); then
    printf 'the run stage does not install: %s\n' "${missing[*]}"
    return 1
  fi
}
if command -v dpkg >/dev/null 2>&1 && command -v readelf >/dev/null 2>&1; then
  check "Dockerfile: the run stage installs the package of every library plexusd needs" dockerfile_runtime
else
  printf 'note: Dockerfile runtime-library check skipped (needs dpkg and readelf)\n'
fi

# ---- systemd ----------------------------------------------------------------
unit="$deploy/systemd/plexusd.service"
unit_hardening() {
  local k bad=0
  # shellcheck disable=SC2016 # the unit's literal $MAINPID
  for k in 'DynamicUser=yes' 'StateDirectory=plexus' 'ConfigurationDirectory=plexus' \
    'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' 'NoNewPrivileges=yes' \
    'ProtectKernelTunables=yes' 'ProtectKernelModules=yes' 'ProtectKernelLogs=yes' \
    'ProtectControlGroups=yes' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
    'SystemCallFilter=@system-service' 'CapabilityBoundingSet=' 'LockPersonality=yes' \
    'MemoryDenyWriteExecute=yes' 'Restart=on-failure' 'KillSignal=SIGTERM' \
    'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF "$k" "$unit" || {
      echo "missing: $k"
      bad=1
    }
  done
  # The stop timeout must outlast the drain (drain.timeout_ms of the config).
  local stop drain
  stop="$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$unit")"
  drain="$(sed -n 's/^[[:space:]]*timeout_ms:[[:space:]]*\([0-9]*\).*/\1/p' "$deploy/systemd/plexusd.yaml")"
  drain="${drain:-10000}"
  if [[ -z "$stop" ]] || ((stop * 1000 <= drain)); then
    echo "TimeoutStopSec=${stop:-unset} is not above drain.timeout_ms $drain"
    bad=1
  fi
  need '^ExecStart=[^ ]*plexusd .*--config /etc/plexus/plexusd\.yaml' "$(<"$unit")" \
    "ExecStart does not run plexusd --config /etc/plexus/plexusd.yaml"
  return "$bad"
}
check "systemd: plexusd.service hardening, restart, reload, TimeoutStopSec above the drain" unit_hardening
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's binary to exist: point it at PLEXUSD. Any
  # warning (an unknown or misspelt key, a bad value) fails the check.
  mkdir "$tmp/unit"
  sed "s#^ExecStart=/usr/local/bin/plexusd #ExecStart=$plexusd #" "$unit" >"$tmp/unit/plexusd.service"
  quiet "systemd-analyze verify plexusd.service (no errors, no warnings)" \
    systemd-analyze verify "$tmp/unit/plexusd.service"
else
  printf 'note: systemd-analyze is not installed: systemd-analyze verify skipped\n'
fi

printf '%s: %d ok, %d failed\n' "test_deploy" "$passed" "$failed"
((failed == 0))
