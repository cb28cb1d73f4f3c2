"""The `aggregate` figure of bench/bench.py: API composition (docs/aggregate.md) against what
a client does without it, two proxied requests one after the other.

One weir process (one worker, CPU 0) and a JSON upstream (its own nginx, one worker, on the
load CPU, answering small JSON documents) serve two Routes:

  /users/42     a plain proxied route to the JSON upstream                        (a)
  /profile/42   an aggregate rule with two required parts on the same upstream,
                /users/42 and /orders?user=42, merged into one JSON object        (b)

Figures, from interleaved rounds (a, b, a, b, ...):
  - CPU per request (wrk -t1 -c32): (b) as a ratio to 2 x (a), the CPU of the two
    proxied requests the client would otherwise make (and (b) / (a) as it is);
  - latency (wrk -t1 -c1 --latency, one request at a time): p50 of (b) against 2 x the
    p50 of (a), what two sequential requests take, since the parts go out in parallel.

Before measuring, /profile/42 must answer 200 with `X-Weir-Completed: true` and both keys.
"""

import json
import os
import statistics
import urllib.request

import benchlib as b

UPSTREAM_CONF = """
worker_processes 1;
pid {tmp}/aggregate-upstream.pid;
error_log {tmp}/aggregate-upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location /users/ {{ return 200 '{{"id":"42","name":"Ada Lovelace","email":"ada@example.com"}}'; }}
        location /orders {{ return 200 '[{{"id":"42-1","total":42.5}},{{"id":"42-2","total":7.25}}]'; }}
        location / {{ return 200 '{{"ok":true}}'; }}
    }}
}}
"""

CONFIG = """apiVersion: v1
kind: Service
metadata: {{name: json}}
spec:
  ports:
    - {{name: http, port: 80, targetPort: {upstream}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: json-local
  labels: {{kubernetes.io/service-name: json}}
addressType: IPv4
ports: [{{name: http, port: {upstream}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {{name: bench-aggregate}}
spec:
  rules:
    - name: proxied
      matches: [{{path: {{type: Prefix, value: /users}}}}]
      backends: [{{service: json, port: 80}}]
    - name: profile
      matches: [{{path: {{type: Exact, value: "/profile/{{id}}"}}}}]
      aggregate:
        timeout: 5s
        parts:
          - {{key: user, service: json, port: 80, path: "/users/${{path.id}}"}}
          - {{key: orders, service: json, port: 80, path: "/orders?user=${{path.id}}"}}
"""

VARIANTS = [("proxied", "/users/42"), ("aggregate", "/profile/42")]


def run(_up_port, rounds, duration, warmup, conns, row, fmt, ratio_text, interleave):
    """Starts the JSON upstream and weir, measures, adds the rows, stops both by pid."""
    up_port = b.free_port()
    upstream = b.start_nginx("aggregate-upstream", UPSTREAM_CONF.format(tmp=b.TMP, port=up_port),
                             b.LOAD_CPU, up_port)
    cfg = os.path.join(b.TMP, "aggregate")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "config.yaml"), "w") as f:
        f.write(CONFIG.format(upstream=up_port))
    port, admin = b.free_port(), b.free_port()
    weir = b.start_weir("weir-aggregate", cfg, port, admin, ready_path="/users/42")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/profile/42", timeout=5) as r:
            body = json.loads(r.read())
            if r.status != 200 or r.headers.get("x-weir-completed") != "true" or set(body) != {"user", "orders"}:
                raise SystemExit(f"bench: /profile/42 answered {r.status} {r.headers} {body}")

        def run_one(name):
            path = dict(VARIANTS)[name]

            def go(seconds, warm):
                return b.parse_wrk(b.wrk(port, seconds or duration, conns, path=path))
            res = b.measure(lambda: [weir.pid], go, warmup)
            # One request at a time: the latency of one answer, without queueing.
            lat = b.parse_wrk(b.wrk(port, duration, 1, latency=True, path=path))
            res["p50"], res["p99"] = lat["p50"], lat["p99"]
            res["errors"] += lat["errors"]
            return res
        res = interleave([v[0] for v in VARIANTS], run_one, rounds, "aggregate")
        proxied = [x["cpu_us_per_req"] for x in res["proxied"]]
        agg = [x["cpu_us_per_req"] for x in res["aggregate"]]
        _, rtxt = ratio_text(agg, [2 * p for p in proxied])
        row("cpu/request, aggregate of 2 parts", fmt(statistics.median(agg), "us"), "2 proxied",
            fmt(2 * statistics.median(proxied), "us"), rtxt)
        _, rtxt1 = ratio_text(agg, proxied)
        row("  vs 1 proxied request", "", "1 proxied", fmt(statistics.median(proxied), "us"), rtxt1)
        row("  requests/s, aggregate of 2 parts", fmt(statistics.median(x["rps"] for x in res["aggregate"]), "rps"),
            "1 proxied", fmt(statistics.median(x["rps"] for x in res["proxied"]), "rps"))
        p50a = [x["p50"] for x in res["aggregate"]]
        p50p = [x["p50"] for x in res["proxied"]]
        _, ltxt = ratio_text(p50a, [2 * p for p in p50p])
        row("p50 latency (-c1), aggregate of 2 parts", fmt(statistics.median(p50a), "us"), "2 sequential",
            fmt(2 * statistics.median(p50p), "us"), ltxt)
        row("  p99 latency (-c1), aggregate / 1 proxied", fmt(statistics.median(x["p99"] for x in res["aggregate"]), "us"),
            "1 proxied", fmt(statistics.median(x["p99"] for x in res["proxied"]), "us"))
        errs = {n: sum(x["errors"] for x in xs) for n, xs in res.items()}
        if any(errs.values()):
            row("aggregate: non-2xx or socket errors", str(sum(errs.values())), "", "", str(errs), "0", "no")
    finally:
        b.stop(weir)
        b.stop(upstream)
