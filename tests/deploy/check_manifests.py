#!/usr/bin/env python3
"""Structural checks of deploy/'s compose file and Kubernetes manifests.

Schema-less: no Kubernetes API server or Docker engine, only PyYAML. Used by
tests/deploy/test_deploy.sh, one check per call:

    check_manifests.py CHECK ARG...

prints what is wrong (one line each) and exits 1, or prints nothing and
exits 0. `compose-*` checks take the output of `docker-compose config` (the
file as compose resolved it); `k8s-*` checks take the deploy/k8s directory.
Helpers that print data for the shell: `compose-nodes` (service, config
file, environment, one service a line) and `k8s-config` (the ConfigMap's
plexusd.yaml).
"""

import glob
import os
import re
import sys

import yaml

PLEXUS_SERVICES = ["node1", "node2", "node3", "client"]
NODE_PORT, ADMIN_PORT = 7100, 7200
CONFIG_PATH = "/etc/plexus/plexusd.yaml"
KEYS_DIR = "/var/lib/plexus"
DEFAULT_DRAIN_MS = 10000


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def get(d, dotted, default=None):
    """d's value at a dotted path of map keys, or default."""
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


# ---- compose ---------------------------------------------------------------


def compose_config_file(svc):
    """The host file a service mounts at CONFIG_PATH (None if none)."""
    for v in svc.get("volumes") or []:
        parts = v.split(":") if isinstance(v, str) else [v.get("source"), v.get("target")]
        if len(parts) >= 2 and parts[1] == CONFIG_PATH:
            return parts[0]
    return None


def compose_key_volume(svc):
    """The named volume a service mounts at KEYS_DIR (None if none)."""
    for v in svc.get("volumes") or []:
        parts = v.split(":") if isinstance(v, str) else [v.get("source"), v.get("target")]
        if len(parts) >= 2 and parts[1] == KEYS_DIR:
            return parts[0]
    return None


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def compose_services(c, errs):
    services = c.get("services") or {}
    for name in ["etcd"] + PLEXUS_SERVICES:
        if name not in services:
            errs.append(f"no service {name}")
    for name in services:
        if name not in ["etcd"] + PLEXUS_SERVICES:
            errs.append(f"unexpected service {name}")
    for name in PLEXUS_SERVICES:
        b = (services.get(name) or {}).get("build") or {}
        if not str(b.get("dockerfile", "")).endswith("deploy/Dockerfile"):
            errs.append(f"{name}: not built from deploy/Dockerfile")


def compose_secret(c, errs):
    secrets = c.get("secrets") or {}
    if "cluster-secret" not in secrets:
        errs.append("no top-level secret cluster-secret")
    else:
        f = secrets["cluster-secret"].get("file")
        if not f or not os.path.isfile(f):
            errs.append(f"secret cluster-secret: file {f!r} does not exist")
        elif not os.path.basename(f).endswith(".example"):
            errs.append(f"secret cluster-secret: {f} is not marked as an example")
        elif os.path.getsize(f) < 17:
            errs.append(f"secret cluster-secret: {f} is shorter than 16 bytes")
    for name in PLEXUS_SERVICES:
        svc = (c.get("services") or {}).get(name) or {}
        srcs = [s if isinstance(s, str) else s.get("source") for s in svc.get("secrets") or []]
        if "cluster-secret" not in srcs:
            errs.append(f"{name}: does not use the secret cluster-secret")


def compose_volumes(c, errs):
    declared = set((c.get("volumes") or {}).keys())
    seen = {}
    for name in PLEXUS_SERVICES:
        svc = (c.get("services") or {}).get(name) or {}
        vol = compose_key_volume(svc)
        if vol is None:
            errs.append(f"{name}: nothing mounted at {KEYS_DIR}")
        elif vol not in declared:
            errs.append(f"{name}: {KEYS_DIR} is {vol}, not a declared named volume")
        elif vol in seen:
            errs.append(f"{name}: shares the key volume {vol} with {seen[vol]}")
        else:
            seen[vol] = name
        cfg = compose_config_file(svc)
        if cfg is None:
            errs.append(f"{name}: nothing mounted at {CONFIG_PATH}")
        elif not os.path.isfile(cfg):
            errs.append(f"{name}: config {cfg} does not exist")


def depends(svc):
    d = svc.get("depends_on") or {}
    return {k: None for k in d} if isinstance(d, list) else d


def compose_depends(c, errs):
    services = c.get("services") or {}

    def reach(name, seen):
        for dep in depends(services.get(name) or {}):
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    for name, svc in services.items():
        for dep, how in depends(svc).items():
            cond = (how or {}).get("condition")
            if cond != "service_healthy":
                errs.append(f"{name}: depends_on {dep} with condition {cond}, not service_healthy")
    for name in PLEXUS_SERVICES:
        if "etcd" not in reach(name, set()):
            errs.append(f"{name}: does not wait for etcd")
    for dep in ["node1", "node2", "node3"]:
        if dep not in depends(services.get("client") or {}):
            errs.append(f"client: does not depend on {dep}")
    for name in services:
        if name in reach(name, set()):
            errs.append(f"{name}: depends on itself (a cycle)")


def compose_healthchecks(c, errs):
    for name, svc in (c.get("services") or {}).items():
        hc = svc.get("healthcheck") or {}
        test = hc.get("test")
        if not test or hc.get("disable"):
            errs.append(f"{name}: no healthcheck")
            continue
        text = " ".join(test) if isinstance(test, list) else str(test)
        if name in PLEXUS_SERVICES and "/healthz" not in text:
            errs.append(f"{name}: healthcheck does not ask /healthz: {text}")
        if name == "etcd" and "endpoint health" not in text:
            errs.append(f"etcd: healthcheck is not `etcdctl endpoint health`: {text}")


def compose_images(c, errs, etcd_image, build_image, run_image):
    services = c.get("services") or {}
    got = (services.get("etcd") or {}).get("image")
    if got != etcd_image:
        errs.append(f"etcd: image {got!r}, expected {etcd_image!r}")
    for name in PLEXUS_SERVICES:
        args = ((services.get(name) or {}).get("build") or {}).get("args") or {}
        if args.get("BUILD_IMAGE") != build_image or args.get("RUN_IMAGE") != run_image:
            errs.append(f"{name}: build args {args}, expected BUILD_IMAGE={build_image} "
                        f"RUN_IMAGE={run_image}")


def node_roles(cfg, env):
    if "PLEXUS_NODE_ROLES" in env:
        return [r for r in env["PLEXUS_NODE_ROLES"].split(",") if r]
    return list(get(cfg, "node.roles", []) or [])


def compose_wiring(c, errs):
    """The mounted configs agree with the compose file: secret and key paths,
    the etcd service, roles offered for role: placement, the workload's
    target registered by a supervisor."""
    services = c.get("services") or {}
    roles, globals_, targets = {}, set(), []
    for name in PLEXUS_SERVICES:
        svc = services.get(name) or {}
        path = compose_config_file(svc)
        if path is None or not os.path.isfile(path):
            continue  # compose-volumes reports it
        cfg = load(path) or {}
        env = env_of(svc)
        sec = env.get("PLEXUS_CLUSTER_SECRET_FILE", get(cfg, "cluster.secret_file"))
        if sec != "/run/secrets/cluster-secret":
            errs.append(f"{name}: cluster.secret_file {sec!r} is not the compose secret "
                        "/run/secrets/cluster-secret")
        key = env.get("PLEXUS_NODE_KEY_FILE", get(cfg, "node.key_file", ""))
        if os.path.dirname(key) != KEYS_DIR:
            errs.append(f"{name}: node.key_file {key!r} is not on the key volume {KEYS_DIR}")
        eps = env.get("PLEXUS_CLUSTER_ETCD_ENDPOINTS")
        eps = eps.split(",") if eps else get(cfg, "cluster.etcd_endpoints", []) or []
        if "http://etcd:2379" not in eps:
            errs.append(f"{name}: etcd endpoints {eps} do not name the etcd service")
        roles[name] = node_roles(cfg, env)
        for r in cfg.get("roots") or []:
            pl = r.get("placement", "here")
            if pl.startswith("role:"):
                targets.append((name, "role", pl[5:]))
            if r.get("supervisor") and r.get("global_name"):
                for i in range(int(r.get("children", 1))):
                    globals_.add(f"{r['global_name']}.{i}")
            elif r.get("global_name"):
                globals_.add(r["global_name"])
            if r.get("behavior") == "load.client":
                arg = yaml.safe_load(r.get("arg", "{}")) or {}
                targets.append((name, "name", arg.get("target")))
    for name, kind, what in targets:
        if kind == "role" and not any(what in rs for rs in roles.values()):
            errs.append(f"{name}: places children on role {what}, which no node offers")
        if kind == "name" and what not in globals_:
            errs.append(f"{name}: load.client targets {what!r}, which no root registers "
                        f"(registered: {sorted(globals_)})")


def compose_nodes(c):
    """Prints `service<TAB>config<TAB>K=V...` for each plexus service."""
    for name in PLEXUS_SERVICES:
        svc = (c.get("services") or {}).get(name) or {}
        env = "\t".join(f"{k}={v}" for k, v in sorted(env_of(svc).items()))
        print(f"{name}\t{compose_config_file(svc) or ''}\t{env}".rstrip("\t"))


# ---- kubernetes ------------------------------------------------------------


def k8s_docs(d):
    docs = []
    for path in sorted(glob.glob(os.path.join(d, "*.yaml")) + glob.glob(os.path.join(d, "*.yml"))):
        with open(path, encoding="utf-8") as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is not None:
                    docs.append((f"{os.path.basename(path)}[{i}]", doc))
    return docs


def find(docs, kind, name=None):
    return [d for _, d in docs if d.get("kind") == kind and
            (name is None or get(d, "metadata.name") == name)]


def the_sts(docs, errs):
    sts = find(docs, "StatefulSet")
    if len(sts) != 1:
        errs.append(f"{len(sts)} StatefulSets, expected 1")
        return None
    return sts[0]


def container(sts):
    cs = get(sts, "spec.template.spec.containers", []) or []
    return cs[0] if cs else {}


def k8s_docs_check(docs, errs):
    if not docs:
        errs.append("no manifests")
    for where, d in docs:
        for k in ["apiVersion", "kind", "metadata.name"]:
            if not get(d, k):
                errs.append(f"{where}: no {k}")
    for kind in ["ConfigMap", "Secret", "StatefulSet", "Service", "Deployment"]:
        if not find(docs, kind):
            errs.append(f"no {kind}")


def k8s_headless(docs, errs):
    sts = the_sts(docs, errs)
    if sts is None:
        return
    sn = get(sts, "spec.serviceName")
    svc = find(docs, "Service", sn)
    if not sn or not svc:
        errs.append(f"StatefulSet serviceName {sn!r} is no Service")
        return
    if get(svc[0], "spec.clusterIP") != "None":
        errs.append(f"Service {sn}: clusterIP is not None (not headless)")
    sel = get(svc[0], "spec.selector", {}) or {}
    labels = get(sts, "spec.template.metadata.labels", {}) or {}
    match = get(sts, "spec.selector.matchLabels", {}) or {}
    if not sel or any(labels.get(k) != v for k, v in sel.items()):
        errs.append(f"Service {sn}: selector {sel} does not select the pods {labels}")
    if any(labels.get(k) != v for k, v in match.items()) or not match:
        errs.append(f"StatefulSet selector {match} does not match its pod labels {labels}")
    others = [get(s, "metadata.name") for s in find(docs, "Service")
              if get(s, "spec.clusterIP") != "None" and
              all(labels.get(k) == v for k, v in (get(s, "spec.selector", {}) or {}).items())]
    if not others:
        errs.append("no client Service (not headless) selecting the plexus pods")


def k8s_probes(docs, errs):
    sts = the_sts(docs, errs)
    if sts is None:
        return
    c = container(sts)
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        hg = get(c, f"{probe}.httpGet", {}) or {}
        if hg.get("path") != path:
            errs.append(f"{probe}: httpGet path {hg.get('path')!r}, expected {path}")
        port = hg.get("port")
        if port not in ports and port not in ports.values():
            errs.append(f"{probe}: port {port!r} is not a container port ({ports})")
    for want in [NODE_PORT, ADMIN_PORT, 9100]:
        if want not in ports.values():
            errs.append(f"container port {want} not declared")


def k8s_security(docs, errs):
    sts = the_sts(docs, errs)
    if sts is None:
        return
    pod = get(sts, "spec.template.spec.securityContext", {}) or {}
    ctr = container(sts).get("securityContext") or {}

    def eff(k):
        return ctr.get(k, pod.get(k))

    if eff("runAsNonRoot") is not True:
        errs.append("runAsNonRoot is not true")
    if eff("runAsUser") != 10001:
        errs.append(f"runAsUser {eff('runAsUser')!r}, expected 10001 (the image's plexus user)")
    if ctr.get("allowPrivilegeEscalation") is not False:
        errs.append("allowPrivilegeEscalation is not false")
    res = container(sts).get("resources") or {}
    if not res.get("requests") or not res.get("limits"):
        errs.append("container has no resource requests and limits")


def k8s_keys(docs, errs):
    sts = the_sts(docs, errs)
    if sts is None:
        return
    vcts = [get(v, "metadata.name") for v in get(sts, "spec.volumeClaimTemplates", []) or []]
    if not vcts:
        errs.append("no volumeClaimTemplates")
    mounts = {m.get("mountPath"): m.get("name") for m in container(sts).get("volumeMounts") or []}
    if mounts.get(KEYS_DIR) not in vcts:
        errs.append(f"{KEYS_DIR} is not mounted from a volumeClaimTemplate ({vcts})")


def k8s_env(docs, errs):
    sts = the_sts(docs, errs)
    if sts is None:
        return
    defined = set()
    env = {}
    for e in container(sts).get("env") or []:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
            if ref not in defined:
                errs.append(f"env {e.get('name')}: $({ref}) is not defined before it")
        defined.add(e.get("name"))
        env[e.get("name")] = e
    if get(env.get("POD_NAME", {}), "valueFrom.fieldRef.fieldPath") != "metadata.name":
        errs.append("POD_NAME does not come from metadata.name")
    if (env.get("PLEXUS_NODE_NAME") or {}).get("value") != "$(POD_NAME)":
        errs.append("PLEXUS_NODE_NAME is not $(POD_NAME)")
    sn = get(sts, "spec.serviceName")
    adv = (env.get("PLEXUS_NODE_ADVERTISE") or {}).get("value", "")
    want = f"tcp://$(POD_NAME).{sn}.$(POD_NAMESPACE).svc.cluster.local:{NODE_PORT}"
    if adv != want:
        errs.append(f"PLEXUS_NODE_ADVERTISE {adv!r}, expected {want!r}")


def configmap_config(docs, sts):
    """(name, text) of the ConfigMap mounted at /etc/plexus, or (None, None)."""
    vols = {v.get("name"): v for v in get(sts, "spec.template.spec.volumes", []) or []}
    for m in container(sts).get("volumeMounts") or []:
        if m.get("mountPath") == os.path.dirname(CONFIG_PATH):
            cm = get(vols.get(m.get("name"), {}), "configMap.name")
            for d in find(docs, "ConfigMap", cm):
                return cm, (d.get("data") or {}).get(os.path.basename(CONFIG_PATH))
    return None, None


def k8s_wiring(docs, errs):
    """The ConfigMap's config parses and agrees with the StatefulSet: the
    secret and key paths, the etcd Service, the drain against the grace."""
    sts = the_sts(docs, errs)
    if sts is None:
        return
    cm, text = configmap_config(docs, sts)
    if text is None:
        errs.append(f"no ConfigMap with {os.path.basename(CONFIG_PATH)} mounted at "
                    f"{os.path.dirname(CONFIG_PATH)}")
        return
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        errs.append(f"ConfigMap {cm}: plexusd.yaml does not parse: {e}")
        return
    if not isinstance(cfg, dict):
        errs.append(f"ConfigMap {cm}: plexusd.yaml is not a map")
        return
    vols = {v.get("name"): v for v in get(sts, "spec.template.spec.volumes", []) or []}
    mounts = {m.get("mountPath"): m.get("name") for m in container(sts).get("volumeMounts") or []}
    sec = get(cfg, "cluster.secret_file", "")
    vol = vols.get(mounts.get(os.path.dirname(sec)), {})
    sname = get(vol, "secret.secretName")
    secrets = find(docs, "Secret", sname)
    key = os.path.basename(sec)
    if not secrets:
        errs.append(f"cluster.secret_file {sec}: no Secret volume mounted at {os.path.dirname(sec)}")
    elif key not in (secrets[0].get("stringData") or {}) and key not in (secrets[0].get("data") or {}):
        errs.append(f"cluster.secret_file {sec}: Secret {sname} has no key {key}")
    if os.path.dirname(get(cfg, "node.key_file", "")) != KEYS_DIR:
        errs.append(f"node.key_file {get(cfg, 'node.key_file')!r} is not on the key volume {KEYS_DIR}")
    for ep in get(cfg, "cluster.etcd_endpoints", []) or []:
        host = re.sub(r"^https?://", "", ep).split(":")[0]
        if not find(docs, "Service", host):
            errs.append(f"etcd endpoint {ep}: no Service {host}")
    drain_s = (get(cfg, "drain.timeout_ms", DEFAULT_DRAIN_MS)) / 1000
    grace = get(sts, "spec.template.spec.terminationGracePeriodSeconds", 30)
    if grace <= drain_s:
        errs.append(f"terminationGracePeriodSeconds {grace} is not above the drain ({drain_s} s)")


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    what, arg = argv[1], argv[2]
    errs = []
    if what.startswith("compose-"):
        c = load(arg) or {}
        if what == "compose-nodes":
            compose_nodes(c)
            return 0
        checks = {
            "compose-services": compose_services,
            "compose-secret": compose_secret,
            "compose-volumes": compose_volumes,
            "compose-depends": compose_depends,
            "compose-healthchecks": compose_healthchecks,
            "compose-wiring": compose_wiring,
        }
        if what == "compose-images":
            compose_images(c, errs, *argv[3:6])
        elif what in checks:
            checks[what](c, errs)
        else:
            print(f"unknown check {what}", file=sys.stderr)
            return 2
    elif what.startswith("k8s-"):
        docs = k8s_docs(arg)
        if what == "k8s-config":
            sts = find(docs, "StatefulSet")
            text = configmap_config(docs, sts[0])[1] if sts else None
            if text is None:
                print("no ConfigMap config mounted", file=sys.stderr)
                return 1
            sys.stdout.write(text)
            return 0
        checks = {
            "k8s-docs": k8s_docs_check,
            "k8s-headless": k8s_headless,
            "k8s-probes": k8s_probes,
            "k8s-security": k8s_security,
            "k8s-keys": k8s_keys,
            "k8s-env": k8s_env,
            "k8s-wiring": k8s_wiring,
        }
        if what not in checks:
            print(f"unknown check {what}", file=sys.stderr)
            return 2
        checks[what](docs, errs)
    else:
        print(f"unknown check {what}", file=sys.stderr)
        return 2
    for e in errs:
        print(e)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
