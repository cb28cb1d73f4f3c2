#!/usr/bin/env python3
"""Lints and renders charts/weir with the real Helm engine, checks it, writes deploy/install.yaml.

The engine is Helm's Go library itself, bundled by the `helm-python-sdk` PyPI package
(`import helm_python`), so no `helm` binary is needed. `make chart` installs it if missing.

What it does:
  1. `helm lint --strict` of the chart with the default values and with every optional
     feature on (HPA, ServiceMonitor, Redis URL, watch namespaces, ...).
  2. Renders both value sets (release `weir`, namespace `weir-system`), parses every
     document and checks invariants: each object has apiVersion/kind/metadata.name, names
     are unique, namespaced objects live in the release namespace, the Deployment runs
     hardened (non-root 65532, read-only root, no privilege escalation, ALL capabilities
     dropped, RuntimeDefault seccomp), probes hit the admin port, the RBAC rules are exactly
     the expected least-privilege set, Services select the pods, optional objects appear
     only when enabled.
  3. Checks that values.schema.json rejects bad values.
  4. Kubernetes 1.26 (the oldest version the chart supports, Chart.yaml kubeVersion): lints
     with kube version 1.26 and validates every rendered object and every install.yaml
     document against the Kubernetes 1.26 OpenAPI schema in strict mode (no unknown fields),
     from the `kubernetes-validate` PyPI package, which bundles the schemas per version. A
     field added after 1.26 (e.g. `lifecycle.preStop.sleep`, 1.30) is an unknown field there.
     The CRDs' CEL rules may use only `rule` and `message` (1.26's x-kubernetes-validations).
     A self-test first shows that both checks reject post-1.26 objects.
  5. Writes deploy/install.yaml: the Namespace, the CRDs from charts/weir/crds/ and the
     chart rendered with defaults, in Helm's install order. With `--check` it instead
     fails if deploy/install.yaml differs from a fresh rendering (for CI).

Exit status 0 when everything passes; 1 with a list of failures otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

try:
    import helm_python as helm
except ImportError:  # pragma: no cover - reported to the user
    sys.exit("chart.py: the helm-python-sdk package is missing: pip install helm-python-sdk")
try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - reported to the user
    sys.exit("chart.py: the kubernetes-validate package is missing: pip install kubernetes-validate")
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "weir"
INSTALL = ROOT / "deploy" / "install.yaml"
RELEASE = "weir"
NAMESPACE = "weir-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion, docs/install.md).
MIN_KUBE = "1.26.0"
# The data plane's connection drain after the shutdown delay (dataplane/src/server.rs
# DRAIN_TIMEOUT); the pod's grace period must cover delay + drain.
DRAIN_SECONDS = 30
# Kinds without a schema in Kubernetes itself (from CRDs the user installs): not validated.
NO_KUBE_SCHEMA = {"ServiceMonitor"}
# The only keys of an x-kubernetes-validations rule a 1.26 API server accepts
# (messageExpression 1.27, reason/fieldPath 1.28, optionalOldSelf 1.29 are rejected).
CEL_KEYS_1_26 = {"rule", "message"}

# Every optional feature on.
ALL_ON: dict[str, Any] = {
    "redisUrl": "redis://redis.weir-system:6379",
    "watchNamespaces": ["team-a", "team-b"],
    "logFormat": "text",
    "extraArgs": ["--trusted-proxies", "10.0.0.0/8"],
    "shutdownDelay": "1m30s",
    "terminationGracePeriodSeconds": 150,
    "maxConnections": 10000,
    "headerReadTimeout": "10s",
    "idleTimeout": "60s",
    "defaultCertificate": "weir-system/default-tls",
    "accessLog": "stdout",
    "accessLogFormat": "text",
    "otlpEndpoint": "http://otel-collector.observability:4318",
    "traceSampling": "0.05",
    "requestMetrics": False,
    "metricsPerConsumer": True,
    "cacheMemory": "64Mi",
    "publishService": "edge/public-lb",
    "ingressClass": {"create": True, "name": "weir", "default": True},
    "extraEnv": [{"name": "RUST_LOG", "value": "debug"}],
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                    "targetMemoryUtilizationPercentage": 80},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "weir"}},
    "service": {"type": "NodePort", "externalTrafficPolicy": "Local",
                "annotations": {"example.com/lb": "internal"}},
    "imagePullSecrets": [{"name": "regcred"}],
    "podAnnotations": {"example.com/scrape": "true"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gateway",
                     "effect": "NoSchedule"}],
}

# Values the schema must reject.
BAD_VALUES: list[dict[str, Any]] = [
    {"service": {"type": "Ingress"}},
    {"logFormat": "xml"},
    {"replicaCount": -1},
    {"redisUrl": "http://not-redis"},
    {"watchNamespaces": ["Not_A_Namespace"]},
    {"autoscaling": {"enabled": "yes"}},
    {"grafanaDashboard": {"enabled": "yes"}},
    {"grafanaDashboard": {"namespace": "Not_A_Namespace"}},
    {"unknownTopLevelKey": 1},
    {"publishService": "no-slash"},
    {"ingressClass": {"default": "yes"}},
    {"shutdownDelay": "5 seconds"},
    {"idleTimeout": "1d"},
    {"headerReadTimeout": 10},
    {"maxConnections": -1},
    {"defaultCertificate": "no-namespace"},
    {"accessLogFormat": "xml"},
    {"otlpEndpoint": "otel-collector:4318"},
    {"traceSampling": "1.5"},
    {"requestMetrics": "no"},
    {"cacheMemory": "64 MB"},
    {"drain": {"preStopSleepSeconds": 10}},
    # The template's own check: the grace period must exceed delay + drain.
    {"shutdownDelay": "20s", "terminationGracePeriodSeconds": 50},
    {"shutdownDelay": "500ms", "terminationGracePeriodSeconds": 30},
]

# RBAC rules per render label. Whether they are exactly the controller's API calls is checked
# against the code by controller/tests/chart_rbac.rs (on deploy/install.yaml); here every
# render must grant the same rules, whatever features are on.
RBAC_SEEN: dict[str, tuple[set, set]] = {}

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "IngressClass", "GatewayClass"}

# Helm's install order (pkg/release/util/kind_sorter.go), for a stable install.yaml.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService",
]


class Checker:
    """Collects failures instead of stopping at the first one."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)


def lint(c: Checker, values: dict[str, Any] | None, label: str) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for m in bad:
        c.failures.append(f"lint ({label}): {m.get('path')}: {m.get('error', '').strip()}")
    c.check(not report.get("errors"), f"lint ({label}): errors {report.get('errors')}")
    print(f"lint ({label}): {len(bad)} warnings/errors, "
          f"{len(report.get('messages', [])) - len(bad)} info")


def render(chart: Any, values: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """(template path, object) for every non-empty rendered document, NOTES.txt excluded."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    out = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(manifests[path]):
            if doc is not None:
                out.append((path, doc))
    return out


def rules_of(obj: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in obj.get("rules", []) for g in rule.get("apiGroups", [])
            for r in rule.get("resources", []) for v in rule.get("verbs", [])}


def check_objects(c: Checker, objs: list[tuple[str, dict[str, Any]]], label: str,
                  values: dict[str, Any]) -> None:
    seen: set[tuple[str, str]] = set()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for path, o in objs:
        where = f"{label}: {path}"
        meta = o.get("metadata") or {}
        c.check(bool(o.get("apiVersion")), f"{where}: object without apiVersion")
        c.check(bool(o.get("kind")), f"{where}: object without kind")
        c.check(bool(meta.get("name")), f"{where}: object without metadata.name")
        key = (o.get("kind", ""), meta.get("name", ""))
        c.check(key not in seen, f"{where}: duplicate {key}")
        seen.add(key)
        if o.get("kind") not in CLUSTER_SCOPED:
            c.check(meta.get("namespace") == NAMESPACE,
                    f"{where}: {key} not in namespace {NAMESPACE}")
        c.check((meta.get("labels") or {}).get("app.kubernetes.io/instance") == RELEASE,
                f"{where}: {key} lacks the instance label")
        by_kind.setdefault(o.get("kind", ""), []).append(o)

    def one(kind: str) -> dict[str, Any]:
        found = by_kind.get(kind, [])
        c.check(len(found) == 1, f"{label}: expected one {kind}, got {len(found)}")
        return found[0] if found else {}

    hpa_on = bool(values.get("autoscaling", {}).get("enabled"))
    sm_on = bool(values.get("serviceMonitor", {}).get("enabled"))
    c.check(len(by_kind.get("HorizontalPodAutoscaler", [])) == int(hpa_on),
            f"{label}: HPA present={not hpa_on}, enabled={hpa_on}")
    c.check(len(by_kind.get("ServiceMonitor", [])) == int(sm_on),
            f"{label}: ServiceMonitor present={not sm_on}, enabled={sm_on}")
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                 "PodDisruptionBudget"):
        one(kind)

    # IngressClass `weir` (the default class only when asked); no GatewayClass without the
    # Gateway API served (the render has no such API version).
    ic = one("IngressClass")
    c.check(ic.get("spec", {}).get("controller") == "weir.dev/ingress-controller",
            f"{label}: IngressClass controller")
    is_default = (ic.get("metadata", {}).get("annotations") or {}).get(
        "ingressclass.kubernetes.io/is-default-class")
    want_default = values.get("ingressClass", {}).get("default", False)
    c.check(is_default == ("true" if want_default else None),
            f"{label}: is-default-class annotation {is_default!r}")
    c.check(not by_kind.get("GatewayClass"), f"{label}: GatewayClass without the Gateway API")

    # Deployment.
    dep = one("Deployment")
    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    selector = spec.get("selector", {}).get("matchLabels", {})
    c.check(selector.items() <= pod_labels.items(), f"{label}: selector does not match pods")
    if hpa_on:
        c.check("replicas" not in spec, f"{label}: replicas set although the HPA owns them")
    else:
        c.check(spec.get("replicas") == values.get("replicaCount", 2),
                f"{label}: replicas {spec.get('replicas')}")
    psc = pod.get("securityContext", {})
    c.check(psc.get("runAsNonRoot") is True, f"{label}: pod runAsNonRoot")
    c.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{label}: pod seccomp")
    c.check(pod.get("terminationGracePeriodSeconds", 0) > 0, f"{label}: no grace period")
    c.check(pod.get("serviceAccountName") == one("ServiceAccount").get("metadata", {}).get("name"),
            f"{label}: pod does not use the chart's ServiceAccount")
    c.check(len(pod.get("topologySpreadConstraints", [])) >= 1, f"{label}: no topology spread")
    containers = pod.get("containers", [])
    c.check(len(containers) == 1, f"{label}: expected one container")
    ct = containers[0] if containers else {}
    sc = ct.get("securityContext", {})
    c.check(sc.get("runAsNonRoot") is True, f"{label}: container runAsNonRoot")
    c.check(sc.get("runAsUser") == 65532, f"{label}: container runAsUser {sc.get('runAsUser')}")
    c.check(sc.get("readOnlyRootFilesystem") is True, f"{label}: readOnlyRootFilesystem")
    c.check(sc.get("allowPrivilegeEscalation") is False, f"{label}: allowPrivilegeEscalation")
    c.check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities.drop ALL")
    c.check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            f"{label}: container seccomp")
    args = ct.get("args", [])
    expected_prefix = ["run", "--http-addr", "0.0.0.0:8080", "--https-addr", "0.0.0.0:8443",
                       "--admin-addr", "0.0.0.0:9901", "--namespace", NAMESPACE]
    c.check(args[:len(expected_prefix)] == expected_prefix, f"{label}: args {args}")
    flags = dict(zip(args[len(expected_prefix)::2], args[len(expected_prefix) + 1::2]))
    if values.get("redisUrl"):
        c.check(flags.get("--redis-url") == values["redisUrl"], f"{label}: --redis-url {args}")
    else:
        c.check("--redis-url" not in args, f"{label}: --redis-url set without a value")
    if values.get("watchNamespaces"):
        c.check(flags.get("--watch-namespaces") == ",".join(values["watchNamespaces"]),
                f"{label}: --watch-namespaces {args}")
    else:
        c.check("--watch-namespaces" not in args, f"{label}: --watch-namespaces without value")
    c.check(flags.get("--log-format") == values.get("logFormat", "json"),
            f"{label}: --log-format {args}")
    for key, flag in (("headerReadTimeout", "--header-read-timeout"),
                      ("idleTimeout", "--idle-timeout"),
                      ("defaultCertificate", "--default-certificate"),
                      ("accessLog", "--access-log"),
                      ("accessLogFormat", "--access-log-format"),
                      ("otlpEndpoint", "--otlp-endpoint"),
                      ("traceSampling", "--trace-sampling"),
                      ("cacheMemory", "--cache-memory")):
        c.check(flags.get(flag) == (values.get(key) or None), f"{label}: {flag} {args}")
    c.check(flags.get("--publish-service") == (values.get("publishService") or f"{NAMESPACE}/{RELEASE}"),
            f"{label}: --publish-service {args}")
    c.check(flags.get("--request-metrics") == (None if values.get("requestMetrics", True) else "false"),
            f"{label}: --request-metrics {args}")
    c.check(flags.get("--metrics-per-consumer") == ("true" if values.get("metricsPerConsumer") else None),
            f"{label}: --metrics-per-consumer {args}")
    c.check(flags.get("--max-connections") == (str(values["maxConnections"])
                                               if values.get("maxConnections") else None),
            f"{label}: --max-connections {args}")
    ports = {p.get("name"): p.get("containerPort") for p in ct.get("ports", [])}
    c.check(ports == {"http": 8080, "https": 8443, "admin": 9901}, f"{label}: ports {ports}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = ct.get(probe, {}).get("httpGet", {})
        c.check(get.get("path") == path and get.get("port") in ("admin", 9901),
                f"{label}: {probe} {get}")
    c.check(bool(ct.get("resources", {}).get("requests")), f"{label}: no resource requests")
    # Graceful shutdown by the binary (--shutdown-delay), no preStop hook (the image has no
    # shell, and the kubelet's sleep action is a 1.30 field), and a grace period that covers
    # the delay plus the drain.
    delay = values.get("shutdownDelay", "5s")
    c.check(flags.get("--shutdown-delay") == delay, f"{label}: --shutdown-delay {args}")
    c.check("lifecycle" not in ct, f"{label}: lifecycle hooks {ct.get('lifecycle')}")
    grace = pod.get("terminationGracePeriodSeconds", 0)
    c.check(grace > duration_seconds(delay) + DRAIN_SECONDS,
            f"{label}: grace period {grace}s does not cover --shutdown-delay {delay} "
            f"+ {DRAIN_SECONDS}s drain")
    mounts = {m.get("mountPath") for m in ct.get("volumeMounts", [])}
    c.check("/tmp" in mounts, f"{label}: no writable /tmp with a read-only root")

    # Services.
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    traffic = services.get(RELEASE, {})
    admin = services.get(f"{RELEASE}-admin", {})
    c.check(bool(traffic) and bool(admin), f"{label}: services {sorted(services)}")
    want_type = values.get("service", {}).get("type", "LoadBalancer")
    c.check(traffic.get("spec", {}).get("type") == want_type,
            f"{label}: traffic Service type {traffic.get('spec', {}).get('type')}")
    tports = {(p.get("name"), p.get("port"), p.get("targetPort"))
              for p in traffic.get("spec", {}).get("ports", [])}
    c.check(tports == {("http", 80, "http"), ("https", 443, "https")}, f"{label}: {tports}")
    c.check(admin.get("spec", {}).get("type") == "ClusterIP", f"{label}: admin Service type")
    aports = {(p.get("name"), p.get("port")) for p in admin.get("spec", {}).get("ports", [])}
    c.check(aports == {("admin", 9901)}, f"{label}: admin ports {aports}")
    for name, svc in services.items():
        sel = svc.get("spec", {}).get("selector", {})
        c.check(bool(sel) and sel.items() <= pod_labels.items(),
                f"{label}: Service {name} does not select the pods")

    # RBAC: recorded (compared across renders in main), bound to the ServiceAccount.
    cluster_rules, role_rules = rules_of(one("ClusterRole")), rules_of(one("Role"))
    c.check(bool(cluster_rules) and bool(role_rules), f"{label}: empty RBAC rules")
    c.check(not any("*" in r for r in cluster_rules | role_rules), f"{label}: wildcard RBAC")
    RBAC_SEEN[label] = (cluster_rules, role_rules)
    sa = one("ServiceAccount").get("metadata", {}).get("name")
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        b = one(kind)
        c.check(b.get("roleRef", {}).get("kind") == role_kind
                and b.get("roleRef", {}).get("name") == one(role_kind)["metadata"]["name"],
                f"{label}: {kind} roleRef {b.get('roleRef')}")
        c.check(b.get("subjects") == [{"kind": "ServiceAccount", "name": sa,
                                       "namespace": NAMESPACE}],
                f"{label}: {kind} subjects {b.get('subjects')}")

    pdb = one("PodDisruptionBudget")
    c.check(pdb.get("spec", {}).get("minAvailable") == 1, f"{label}: PDB minAvailable")
    c.check(pdb.get("spec", {}).get("selector", {}).get("matchLabels") == selector,
            f"{label}: PDB selector")
    if hpa_on:
        hpa = one("HorizontalPodAutoscaler")
        c.check(hpa.get("apiVersion") == "autoscaling/v2", f"{label}: HPA apiVersion")
        c.check(hpa.get("spec", {}).get("scaleTargetRef", {}).get("name")
                == dep["metadata"]["name"], f"{label}: HPA target")
    if sm_on:
        sm = one("ServiceMonitor")
        c.check(sm.get("apiVersion") == "monitoring.coreos.com/v1", f"{label}: SM apiVersion")
        sm_sel = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
        c.check(sm_sel.items() <= admin.get("metadata", {}).get("labels", {}).items()
                and not sm_sel.items() <= traffic.get("metadata", {}).get("labels", {}).items(),
                f"{label}: ServiceMonitor must select only the admin Service")
        c.check([e.get("port") for e in sm.get("spec", {}).get("endpoints", [])] == ["admin"],
                f"{label}: ServiceMonitor endpoint port")
        c.check(all(e.get("path") == "/metrics" and e.get("honorLabels") is True
                    for e in sm.get("spec", {}).get("endpoints", [])),
                f"{label}: ServiceMonitor scrapes /metrics keeping the metrics' namespace label")
    dashboards = [o for o in by_kind.get("ConfigMap", [])
                  if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    gd_on = bool(values.get("grafanaDashboard", {}).get("enabled"))
    c.check(len(dashboards) == int(gd_on), f"{label}: Grafana dashboard ConfigMap, enabled={gd_on}")
    for cm in dashboards:
        text = cm.get("data", {}).get("weir.json", "")
        try:
            dash = json.loads(text)
        except ValueError as e:
            c.check(False, f"{label}: dashboard ConfigMap holds no JSON: {e}")
            continue
        c.check(text == (CHART / "dashboards" / "weir.json").read_text().rstrip("\n"),
                f"{label}: dashboard ConfigMap differs from dashboards/weir.json")
        exprs = " ".join(t.get("expr", "") for p in dash.get("panels", [])
                         for t in p.get("targets", []))
        for metric in ("weir_http_requests_total", "weir_http_request_duration_seconds_bucket",
                       "weir_upstream_requests_total", "weir_upstream_duration_seconds_bucket",
                       "weir_backend_endpoints", "weir_circuit_state", "weir_connections",
                       "weir_access_log_dropped_total", "weir_trace_spans_dropped_total"):
            c.check(metric in exprs, f"{label}: the Grafana dashboard never queries {metric}")
        names = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
        c.check({"namespace", "route"} <= names, f"{label}: dashboard variables {names}")


def duration_seconds(text: str) -> float:
    """Seconds of a weir duration string (250ms, 5s, 1m30s, 1h)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h)", text or ""))


def kube_errors(obj: dict[str, Any], version: str = MIN_KUBE) -> list[str]:
    """Why the Kubernetes `version` OpenAPI schema (strict: no unknown fields) refuses obj."""
    if obj.get("kind") in NO_KUBE_SCHEMA:
        return []
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(str(p) for p in e.path)}: {e.message}"]
    except kubernetes_validate.utils.SchemaNotFoundError as e:
        return [e.message]
    return []


def cel_errors(obj: Any, path: str = "") -> list[str]:
    """x-kubernetes-validations rules with keys a 1.26 API server does not know."""
    out = []
    if isinstance(obj, dict):
        for i, rule in enumerate(obj.get("x-kubernetes-validations") or []):
            extra = sorted(set(rule) - CEL_KEYS_1_26)
            if extra:
                out.append(f"{path}.x-kubernetes-validations[{i}]: {', '.join(extra)} "
                           f"(Kubernetes 1.26 knows only rule and message)")
        for k, v in obj.items():
            out.extend(cel_errors(v, f"{path}.{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(cel_errors(v, f"{path}[{i}]"))
    return out


def check_kube_1_26(c: Checker, objs: list[tuple[str, dict[str, Any]]], label: str) -> None:
    """Every object must be one a Kubernetes 1.26 API server accepts."""
    for where, o in objs:
        for err in kube_errors(o):
            c.failures.append(f"{label}: {where}: {o.get('kind')} {o['metadata'].get('name')} "
                              f"is refused by Kubernetes {MIN_KUBE}: {err}")
        if o.get("kind") == "CustomResourceDefinition":
            for err in cel_errors(o):
                c.failures.append(f"{label}: CRD {o['metadata'].get('name')}: {err}")
    c.passed += 1


def self_test_kube_1_26(c: Checker, deployment: dict[str, Any], service: dict[str, Any],
                        crd: dict[str, Any]) -> None:
    """The 1.26 checks must refuse fields added later (and the newest schema accept them, so
    the refusal is about the version, not a malformed test object)."""
    latest = kubernetes_validate.latest_version()

    def mutated(obj: dict[str, Any], change: Any) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        change(obj)
        return obj

    def container(o: dict[str, Any]) -> dict[str, Any]:
        return o["spec"]["template"]["spec"]["containers"][0]

    cases = [
        ("lifecycle.preStop.sleep (1.30)", mutated(deployment, lambda o: container(o).update(
            lifecycle={"preStop": {"sleep": {"seconds": 10}}}))),
        ("sidecar container restartPolicy (1.28)", mutated(deployment, lambda o: container(o)
                                                           .update(restartPolicy="Always"))),
        ("Service trafficDistribution (1.31)", mutated(service, lambda o: o["spec"].update(
            trafficDistribution="PreferClose"))),
    ]
    for what, obj in cases:
        c.check(bool(kube_errors(obj)), f"self-test: Kubernetes {MIN_KUBE} schema accepted {what}")
        c.check(not kube_errors(obj, latest),
                f"self-test: Kubernetes {latest} schema refused {what}: {kube_errors(obj, latest)}")
    c.check(not kube_errors(deployment) and not kube_errors(service),
            "self-test: the unchanged objects must pass")

    def add_message_expression(o: dict[str, Any]) -> None:
        def first_rules(x: Any) -> list | None:
            if isinstance(x, dict):
                if x.get("x-kubernetes-validations"):
                    return x["x-kubernetes-validations"]
                x = list(x.values())
            if isinstance(x, list):
                for v in x:
                    found = first_rules(v)
                    if found is not None:
                        return found
            return None
        rules = first_rules(o)
        assert rules, "self-test: expected a CRD with CEL rules"
        rules[0]["messageExpression"] = "'bad: ' + string(self)"

    c.check(not cel_errors(crd), "self-test: CEL check refused the CRD as shipped")
    c.check(bool(cel_errors(mutated(crd, add_message_expression))),
            "self-test: CEL check accepted messageExpression (1.27)")
    print(f"kubernetes {MIN_KUBE}: self-test refused {len(cases)} post-{MIN_KUBE} fields "
          f"(accepted by {latest}) and a CEL messageExpression")


def install_yaml(chart: Any) -> str:
    """deploy/install.yaml: Namespace, CRDs, then the default rendering, in install order."""
    docs: list[tuple[int, str, str, str]] = []  # (order, kind, name, yaml text)

    def add(obj: dict[str, Any], text: str) -> None:
        kind = obj["kind"]
        order = INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
        docs.append((order, kind, obj["metadata"]["name"], text.strip("\n")))

    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "weir"}}}
    add(ns, yaml.safe_dump(ns, sort_keys=False))
    for crd in sorted(chart.crds, key=lambda d: d["name"]):
        # Verbatim, one document per `---`-separated part of each file.
        for part in crd["data"].split("\n---"):
            part = part.strip("\n-")
            obj = yaml.safe_load(part) if part.strip() else None
            if obj is not None:
                add(obj, f"# Source: weir/{crd['name']}\n{part}")
    manifests = chart.render(None, name=RELEASE, namespace=NAMESPACE, is_install=True)
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        # Keep Helm's text (comments and all); split into documents to sort them.
        for part in manifests[path].split("\n---"):
            part = part.strip("\n-")
            obj = yaml.safe_load(part) if part.strip() else None
            if obj is not None:
                add(obj, f"# Source: {path}\n{part}")
    docs.sort(key=lambda d: (d[0], d[1], d[2]))
    header = (
        "# weir: everything to run it in a cluster, the Helm chart charts/weir rendered with\n"
        f"# default values (release {RELEASE}, namespace {NAMESPACE}) plus the Namespace and\n"
        "# the CRDs. Generated by `make chart` (scripts/chart.py); do not edit by hand.\n"
        "#   kubectl apply --server-side -f deploy/install.yaml\n"
    )
    return header + "".join(f"---\n{d[3]}\n" for d in docs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail if deploy/install.yaml is out of date instead of writing it")
    args = parser.parse_args()

    print(f"helm engine: Helm Go SDK {helm.helm_sdk_version()} "
          f"(helm-python-sdk {helm.__version__})")
    c = Checker()
    lint(c, None, "defaults")
    lint(c, ALL_ON, "all features on")
    report = helm.lint(CHART, None, strict=True, namespace=NAMESPACE, kube_version=MIN_KUBE)
    c.check(not report.get("errors") and not any(m.get("severity", 0) >= 2
                                                for m in report.get("messages", [])),
            f"lint (kube {MIN_KUBE}): {report.get('errors')} {report.get('messages')}")

    chart = helm.Chart.load(CHART)
    c.check(chart.metadata.get("apiVersion") == "v2", "Chart.yaml apiVersion must be v2")
    c.check(chart.metadata.get("appVersion") == "0.1.0", "appVersion must be 0.1.0")
    crd_names = sorted(d["name"] for d in chart.crds)
    c.check(crd_names == ["crds/backendpolicies.weir.dev.yaml", "crds/consumers.weir.dev.yaml",
                          "crds/plugins.weir.dev.yaml", "crds/routes.weir.dev.yaml"],
            f"CRDs in the chart: {crd_names}")

    crd_objs = [(f"weir/{d['name']}", o) for d in sorted(chart.crds, key=lambda d: d["name"])
                for o in yaml.safe_load_all(d["data"]) if o]
    for label, values in (("defaults", {}), ("all features on", ALL_ON)):
        objs = render(chart, values or None)
        check_objects(c, objs, label, values)
        if label == "defaults":
            first = {o["kind"]: o for _, o in reversed(objs)}
            self_test_kube_1_26(c, first["Deployment"], first["Service"],
                                next(o for _, o in crd_objs if o["spec"]["names"]["kind"]
                                     == "Plugin"))
        check_kube_1_26(c, crd_objs + objs, label)
        kinds = sorted({o["kind"] for _, o in objs})
        print(f"render ({label}): {len(objs)} objects: {', '.join(kinds)}")

    c.check(len({repr((sorted(a), sorted(b))) for a, b in RBAC_SEEN.values()}) == 1,
            "RBAC rules differ between renders")

    rejected = 0
    for bad in BAD_VALUES:
        try:
            chart.render(bad, name=RELEASE, namespace=NAMESPACE)
            c.failures.append(f"schema accepted bad values {bad}")
        except helm.HelmError:
            rejected += 1
            c.passed += 1
    print(f"schema: rejected {rejected} of {len(BAD_VALUES)} invalid value sets")

    text = install_yaml(chart)
    parsed = [d for d in yaml.safe_load_all(text) if d is not None]
    c.check(all(d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name")
                for d in parsed), "install.yaml: a document lacks apiVersion/kind/name")
    c.check(sum(d["kind"] == "CustomResourceDefinition" for d in parsed) == 4,
            "install.yaml: expected 4 CRDs")
    check_kube_1_26(c, [("deploy/install.yaml", d) for d in parsed], "install.yaml")
    print(f"kubernetes {MIN_KUBE}: every rendered object and install.yaml document validated "
          f"(strict schema; not validated: {', '.join(sorted(NO_KUBE_SCHEMA))})")
    if args.check:
        current = INSTALL.read_text() if INSTALL.exists() else ""
        c.check(current == text, f"{INSTALL.relative_to(ROOT)} is out of date: run `make chart`")
        print(f"install.yaml: {'up to date' if current == text else 'OUT OF DATE'}")
    else:
        INSTALL.parent.mkdir(parents=True, exist_ok=True)
        INSTALL.write_text(text)
        print(f"wrote {INSTALL.relative_to(ROOT)}: {len(parsed)} objects")

    if c.failures:
        print(f"\nFAILED: {len(c.failures)} check(s) failed, {c.passed} passed", file=sys.stderr)
        for f in c.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"chart: ok ({c.passed} checks passed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
