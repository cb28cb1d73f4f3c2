"""The `upstream` figure group of bench/bench.py: weir's CPU per request through a
BackendPolicy, as a ratio to the same weir's route without one, measured in the same round.

One weir process (one worker, CPU 0) serves five Routes, each to its own Service with the
same three endpoints: the upstream nginx listening on 127.0.0.1, 127.0.0.2 and 127.0.0.3
(same port, all on CPU 1):

  /none     no BackendPolicy: round robin, no breaker (a, the reference)
  /lr       loadBalancer LeastRequest (power of two choices)         (b, target <= 1.03x (a))
  /hash     loadBalancer ConsistentHash on header x-user, every request with one value
            (the Maglev lookup and the header hash)                   (c, target <= 1.03x (a))
  /breaker  circuitBreaker closed (thresholds and caps never reached) (d, target <= 1.02x (a))
  /all      LeastRequest + passive ejection + breaker + retry budget  (e, no target)

Rounds are interleaved and each ratio is taken against (a) of the same round. Before
measuring, every route must answer 200 from the upstream, and /debug/backends must list
each policy with its three endpoints (a policy that did not apply would be measured as free).
"""

import json
import os
import statistics
import urllib.request

import benchlib as b

VARIANTS = [
    ("none", "no BackendPolicy (round robin)", None),
    ("lr", "LeastRequest", "loadBalancer: {type: LeastRequest}"),
    ("hash", "ConsistentHash (header)",
     "loadBalancer: {type: ConsistentHash, consistentHash: {type: Header, header: x-user}}"),
    ("breaker", "circuit breaker closed",
     "circuitBreaker: {failureThreshold: 1000000, window: 10s, openFor: 1s, successThreshold: 1, "
     "maxConnections: 100000, maxPendingRequests: 100000, maxParallelRequests: 100000}"),
    ("all", "LeastRequest + passive + breaker + retry budget",
     "loadBalancer: {type: LeastRequest}\n  healthCheck: {passive: {consecutive5xx: 5, baseEjectionTime: 30s}}\n"
     "  circuitBreaker: {failureThreshold: 1000000, window: 10s, openFor: 1s, successThreshold: 1, maxParallelRequests: 100000}\n"
     "  retry: {budgetPercent: 20}"),
]
TARGETS = {"lr": 1.03, "hash": 1.03, "breaker": 1.02}
ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def config_text(upstream):
    docs = []
    for path, _, policy in VARIANTS:
        svc = f"bench-{path}"
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {svc}}}
spec:
  ports: [{{name: http, port: 80}}]
""")
        docs.append(f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {svc}
  labels: {{kubernetes.io/service-name: {svc}}}
addressType: IPv4
ports: [{{name: http, port: {upstream}}}]
endpoints:
""" + "".join(f"  - {{addresses: [\"{a}\"], conditions: {{ready: true}}}}\n" for a in ADDRESSES))
        if policy:
            docs.append(f"""apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {{name: {svc}}}
spec:
  targetRefs: [{{kind: Service, name: {svc}}}]
  {policy}
""")
        docs.append(f"""apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {{name: {svc}}}
spec:
  rules:
    - matches: [{{path: {{type: Prefix, value: /{path}}}}}]
      backends: [{{service: {svc}, port: 80}}]
""")
    return "---\n".join(docs)


def check(port, admin):
    """Every route answers 200; every policy is bound with its three endpoints."""
    for path, _, _ in VARIANTS:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{path}/x", headers={"x-user": "u-1"})
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status != 200:
                raise SystemExit(f"bench: /{path} answered {r.status}")
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/debug/backends", timeout=5) as r:
        backends = {x["backend"]: x for x in json.load(r)["backends"]}
    for path, _, policy in VARIANTS:
        entry = backends.get(f"default/bench-{path}:80")
        if entry is None or len(entry["endpoints"]) != len(ADDRESSES):
            raise SystemExit(f"bench: /debug/backends lacks bench-{path} with 3 endpoints: {entry}")
        if policy and entry["policy"] != f"default/bench-{path}":
            raise SystemExit(f"bench: the policy of bench-{path} is not applied: {entry}")


def run(up_port, rounds, duration, warmup, conns, row, fmt, ratio_text, interleave):
    """Starts its weir, measures, adds the rows, stops it by pid."""
    cfg = os.path.join(b.TMP, "upstream")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "policies.yaml"), "w") as f:
        f.write(config_text(up_port))
    port, admin = b.free_port(), b.free_port()
    weir = b.start_weir("weir-upstream", cfg, port, admin, ready_path="/none")
    check(port, admin)

    def run_one(path):
        def go(seconds, warm):
            return b.parse_wrk(b.wrk(port, seconds or duration, conns, path=f"/{path}/x",
                                     headers=["x-user: u-1"]))
        return b.measure(lambda: [weir.pid], go, warmup)
    res = interleave([v[0] for v in VARIANTS], run_one, rounds, "upstream")
    base = [x["cpu_us_per_req"] for x in res["none"]]
    for path, label, _ in VARIANTS:
        w = [x["cpu_us_per_req"] for x in res[path]]
        med, rtxt = ratio_text(w, base) if path != "none" else (1.0, "1.00x")
        target = f"<= {TARGETS[path]}x" if path in TARGETS else "-"
        holds = ("yes" if med <= TARGETS[path] else "no") if path in TARGETS else "-"
        row(f"cpu/request, {label}", fmt(statistics.median(w), "us"), "no policy",
            fmt(statistics.median(base), "us"), rtxt, target, holds)
        row(f"  requests/s, {label}", fmt(statistics.median(x["rps"] for x in res[path]), "rps"))
    errs = {p: sum(x["errors"] for x in xs) for p, xs in res.items()}
    b.log(f"upstream errors (non-2xx, socket errors): {errs}")
    if any(errs.values()):
        row("upstream routes: non-2xx or socket errors", str(sum(errs.values())), "", "", str(errs), "0", "no")
    b.stop(weir)
