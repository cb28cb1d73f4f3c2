"""The `cache` figure of bench/bench.py: weir's CPU per request for a response-cache hit, as
a ratio to a proxied request on the same weir, measured in the same interleaved rounds.

One weir process (one worker, CPU 0) serves two Routes on the same upstream:

  /none    no plugins: every request is proxied to the upstream      (a, the reference)
  /cached  a `cache` Plugin (ttl 1h, store Memory): after the first request every one is
           a hit answered from the memory store, never reaching the upstream
           (b, target <= 0.6x (a), BENCHMARKING.md)

Before measuring, /cached must answer `X-Cache-Status: Miss` then `Hit`; after, the
`weir_cache_requests_total{result="hit"}` count must have grown by at least the requests
wrk reports (a miss measured as a hit would make the figure lie).
"""

import os
import statistics
import urllib.request

import benchlib as b

TARGET = 0.6


def config_text():
    return """apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: bench-cache}
spec:
  cache: {ttl: 1h}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: bench-none}
spec:
  rules:
    - matches: [{path: {type: Prefix, value: /none}}]
      backends: [{service: upstream, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: bench-cached}
spec:
  plugins: [bench-cache]
  rules:
    - matches: [{path: {type: Prefix, value: /cached}}]
      backends: [{service: upstream, port: 80}]
"""


def cache_status(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        if r.status != 200:
            raise SystemExit(f"bench: {path} answered {r.status}")
        return r.headers.get("x-cache-status")


def hits(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode(errors="replace")
    for line in text.splitlines():
        if line.startswith('weir_cache_requests_total{result="hit"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run(up_port, rounds, duration, warmup, conns, row, fmt, ratio_text, interleave):
    """Starts its weir, measures, adds the rows, stops it by pid."""
    cfg = os.path.join(b.TMP, "cache", "config")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "00-backend.yaml"), "w") as f:
        f.write(b.BACKEND_YAML.format(upstream=up_port))
    with open(os.path.join(cfg, "10-cache.yaml"), "w") as f:
        f.write(config_text())
    port, admin = b.free_port(), b.free_port()
    weir = b.start_weir("weir-cache", cfg, port, admin, ready_path="/none")
    first, second = cache_status(port, "/cached/x"), cache_status(port, "/cached/x")
    if (first, second) != ("Miss", "Hit"):
        raise SystemExit(f"bench: /cached/x answered X-Cache-Status {first} then {second}, not Miss then Hit")
    hits_before = hits(admin)
    measured = [0]

    def run_one(path):
        def go(seconds, warm):
            out = b.parse_wrk(b.wrk(port, seconds or duration, conns, path=f"/{path}/x"))
            if path == "cached":
                measured[0] += out["requests"]
            return out
        return b.measure(lambda: [weir.pid], go, warmup)
    res = interleave(["none", "cached"], run_one, rounds, "cache")
    base = [x["cpu_us_per_req"] for x in res["none"]]
    w = [x["cpu_us_per_req"] for x in res["cached"]]
    med, rtxt = ratio_text(w, base)
    row("cpu/request, cache hit (memory store)", fmt(statistics.median(w), "us"), "proxied request",
        fmt(statistics.median(base), "us"), rtxt, f"<= {TARGET}x", "yes" if med <= TARGET else "no")
    row("  requests/s, cache hit", fmt(statistics.median(x["rps"] for x in res["cached"]), "rps"),
        "proxied request", fmt(statistics.median(x["rps"] for x in res["none"]), "rps"))
    counted = hits(admin) - hits_before
    errs = sum(x["errors"] for xs in res.values() for x in xs)
    if counted < measured[0] or errs:
        row("cache: hits counted / requests measured, errors", f"{counted:.0f} / {measured[0]}", "", "",
            str(errs), "all hits, 0 errors", "no")
    b.stop(weir)
