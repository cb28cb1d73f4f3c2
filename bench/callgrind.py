#!/usr/bin/env python3
"""User-space instructions per proxied request, under valgrind's callgrind.

    python3 bench/callgrind.py target/release/weir [OTHER_WEIR_BINARY ...] [nginx]
    python3 bench/callgrind.py --plugins target/release/weir [OTHER_WEIR_BINARY ...]
    python3 bench/callgrind.py --upstream target/release/weir [OTHER_WEIR_BINARY ...]

Instruction counts do not move with the noise of a shared machine, so this is the way to
A/B two builds of weir (or weir vs nginx) on the request path. Kernel time is not counted.
weir runs with per-request metrics on and the access log off (`CG_ACCESS_LOG=stdout` to
include it).
For each binary: starts the static upstream (nginx, as in bench.py), the proxy under
`valgrind --tool=callgrind` (weir with one worker; nginx with `master_process off`), sends
a warm-up, zeroes the counters (`callgrind_control -z`), sends CG_RATE (300) req/s for
CG_SECONDS (5) over 4 keep-alive connections with weir-loadgen, dumps
(`callgrind_control -d`) and prints instructions / answered requests.

`--plugins`: the routes of bench/plugins.py's config (same key, JWKS Secret and token
generation) in one weir per binary: `/none` (no plugins), `/jwt` (jwt RS256, JWKS in a
Secret; every request carries the same `Authorization: Bearer` token, so verification is
a cache hit after the warm-up), `/rl` (rateLimit store Local, key ClientIP, never
reached), `/jwtrl` (both) and `/edge` (cors + request/response headers + jwt + local
rateLimit, with an allowed Origin). Before measuring, each route must answer 200 and the jwt
routes 401 without the token. Each route gets its own warm-up, zero and dump; CG_ROUNDS
(1) rounds in the order none, jwt, rl, jwtrl. It prints instructions per request of every
route and its ratio to `/none` (target for `/jwtrl`: <= 1.1x, BENCHMARKING.md); any
non-2xx answer (401, 429) or transport error is printed as an error.

`--upstream`: the routes of bench/upstream.py (each to its own Service with three
endpoints): `/none` (no BackendPolicy), `/lr` (LeastRequest), `/hash` (ConsistentHash on a
header, every request with `x-user: u-1`), `/breaker` (a closed circuit breaker) and `/all`
(LeastRequest + passive ejection + breaker + retry budget), after the same check that every
policy is bound; ratios to `/none` (targets 1.03x, 1.03x, 1.02x).

KEEP_TMP=1 keeps the callgrind files (named after the binary and route) for
`callgrind_annotate --inclusive=yes FILE`. Needs: apt-get install -y valgrind nginx-light
(and openssl for --plugins).
"""

import glob
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
import benchlib as b  # noqa: E402

RATE = int(os.environ.get("CG_RATE", "300"))
SECONDS = int(os.environ.get("CG_SECONDS", "5"))
ROUNDS = int(os.environ.get("CG_ROUNDS", "1"))
# The routes of bench/plugins.py that --plugins measures (the Redis route is left out: its
# cost is mostly the round trip, which callgrind does not see as the proxy's work).
PLUGIN_ROUTES = ["none", "jwt", "rl", "jwtrl", "edge", "gzip", "extauth"]


def total_ir(path):
    tot = 0
    for f in glob.glob(path):
        with open(f) as fh:
            for line in fh:
                if line.startswith(("summary:", "totals:")):
                    tot = max(tot, int(line.split()[1]))
    return tot


class Valgrind:
    """One process under callgrind; `count()` measures one loadgen run between a zero and a dump."""

    def __init__(self, name, argv, out):
        self.name, self.out, self.dumps = name, out, 0
        self.p = b.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv, name,
                         env=dict(os.environ, WEIR_WORKER_THREADS="1", RUST_LOG="warn"))

    def control(self, flag):
        subprocess.run(["callgrind_control", flag, str(self.p.pid)], check=True, capture_output=True, timeout=60)

    def count(self, port, path="/", headers=(), label=None):
        """Warm-up, zero, measured run, dump: (instructions per answered request, report)."""
        args = ["rate", "--addr", f"127.0.0.1:{port}", "--rate", RATE, "--connections", 4, "--path", path]
        for h in headers:
            args += ["--header", h]
        b.loadgen(args + ["--duration", 1], 120)
        self.control("-z")
        r = b.loadgen(args + ["--duration", SECONDS], 300)
        self.control("-d")
        self.dumps += 1
        dump = f"{self.out}.{self.dumps}"
        deadline = time.time() + 30
        while not os.path.exists(dump) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        ir = total_ir(dump)
        if label and os.path.exists(dump):
            os.replace(dump, os.path.join(b.TMP, f"cg-{label}.out"))
        return ir / max(r["ok"], 1), r

    def stop(self):
        b.stop(self.p)


def measure(name, argv, port):
    out = os.path.join(b.TMP, f"cg-{name}.out")
    v = Valgrind(name, argv, out)
    b.wait_http(f"http://127.0.0.1:{port}/", name, timeout=120, proc=v.p)
    per_req, r = v.count(port)
    print(f"{name}: {per_req:,.0f} instructions/request (user space, {r['ok']} requests, "
          f"errors {r['errors'] + r['non_2xx']})", flush=True)
    v.stop()


def weir_argv(target, cfg, port, admin):
    """weir as bench.py runs it: per-request metrics on, the access log off (the defaults of
    Kubernetes mode; standalone mode logs to stdout unless told otherwise). CG_ACCESS_LOG
    (e.g. `stdout`) measures with the log."""
    return [os.path.abspath(target), "run", "--config-dir", cfg, "--http-addr", f"127.0.0.1:{port}",
            "--admin-addr", f"127.0.0.1:{admin}", "--access-log", os.environ.get("CG_ACCESS_LOG", "off")]


def check_plugin_routes(port, headers):
    """Each route answers 200 with its headers; jwt routes answer 401 without the token."""
    for path in PLUGIN_ROUTES:
        url = f"http://127.0.0.1:{port}/{path}/x"
        if any(h.startswith("Authorization") for h in headers[path]):
            try:
                urllib.request.urlopen(url, timeout=30)
                sys.exit(f"callgrind: /{path} answered without a token")
            except urllib.error.HTTPError as e:
                if e.code != 401:
                    sys.exit(f"callgrind: /{path} without a token answered {e.code}, not 401")
        req = urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in headers[path]))
        with urllib.request.urlopen(req, timeout=30) as r:
            if r.status != 200:
                sys.exit(f"callgrind: /{path} answered {r.status}")


def measure_plugins(name, target, up):
    import plugins  # bench/plugins.py: the same config, key and token as `make bench`

    tmp = os.path.join(b.TMP, f"plugins-{name}")
    cfg = os.path.join(tmp, "config")
    os.makedirs(cfg, exist_ok=True)
    jwks, token = plugins.make_key_and_token(tmp)
    with open(os.path.join(cfg, "00-backend.yaml"), "w") as f:
        f.write(b.BACKEND_YAML.format(upstream=up))
    with open(os.path.join(cfg, "10-plugins.yaml"), "w") as f:
        f.write(plugins.config_text(jwks, False, up))
    variants = {p: plugs for p, _, plugs in plugins.VARIANTS}
    headers = {p: plugins.request_headers(variants[p], token) for p in PLUGIN_ROUTES}
    port, admin = b.free_port(), b.free_port()
    v = Valgrind(name, weir_argv(target, cfg, port, admin), os.path.join(b.TMP, f"cg-{name}.out"))
    b.wait_http(f"http://127.0.0.1:{port}/none/x", name, timeout=120, proc=v.p)
    check_plugin_routes(port, headers)
    res = {p: [] for p in PLUGIN_ROUTES}
    errors = {p: 0 for p in PLUGIN_ROUTES}
    for rnd in range(ROUNDS):
        for path in PLUGIN_ROUTES:
            per_req, r = v.count(port, f"/{path}/x", headers[path], label=f"{name}-{path}-{rnd}")
            res[path].append(per_req)
            errors[path] += r["errors"] + r["non_2xx"]
            b.log(f"{name} round {rnd + 1}/{ROUNDS} /{path}: {per_req:,.0f} instructions/request ({r['ok']} ok)")
    v.stop()
    base = statistics.median(res["none"])
    print(f"{name}: user-space instructions per request (median of {ROUNDS} round(s), "
          f"{RATE} req/s x {SECONDS} s, 4 connections)", flush=True)
    for path in PLUGIN_ROUTES:
        med = statistics.median(res[path])
        target = {"jwtrl": "  (target <= 1.10x)", "edge": "  (target <= 1.15x)"}.get(path, "")
        spread = f" [{min(res[path]):,.0f}..{max(res[path]):,.0f}]" if ROUNDS > 1 else ""
        err = f", {errors[path]} errors" if errors[path] else ""
        print(f"  /{path:<6} {med:>10,.0f}{spread}  {med / base:.3f}x /none{target}{err}", flush=True)


def measure_upstream(name, target, up):
    import upstream  # bench/upstream.py: the same Services, endpoints and policies as `make bench`

    cfg = os.path.join(b.TMP, f"upstream-{name}")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "policies.yaml"), "w") as f:
        f.write(upstream.config_text(up))
    routes = [p for p, _, _ in upstream.VARIANTS]
    port, admin = b.free_port(), b.free_port()
    v = Valgrind(name, weir_argv(target, cfg, port, admin), os.path.join(b.TMP, f"cg-{name}.out"))
    b.wait_http(f"http://127.0.0.1:{port}/none/x", name, timeout=120, proc=v.p)
    upstream.check(port, admin)
    res = {p: [] for p in routes}
    errors = {p: 0 for p in routes}
    for rnd in range(ROUNDS):
        for path in routes:
            per_req, r = v.count(port, f"/{path}/x", ["x-user: u-1"], label=f"{name}-{path}-{rnd}")
            res[path].append(per_req)
            errors[path] += r["errors"] + r["non_2xx"]
            b.log(f"{name} round {rnd + 1}/{ROUNDS} /{path}: {per_req:,.0f} instructions/request ({r['ok']} ok)")
    v.stop()
    base = statistics.median(res["none"])
    print(f"{name}: user-space instructions per request (median of {ROUNDS} round(s), "
          f"{RATE} req/s x {SECONDS} s, 4 connections)", flush=True)
    for path in routes:
        med = statistics.median(res[path])
        target = f"  (target <= {upstream.TARGETS[path]:.2f}x)" if path in upstream.TARGETS else ""
        err = f", {errors[path]} errors" if errors[path] else ""
        print(f"  /{path:<8} {med:>10,.0f}  {med / base:.3f}x /none{target}{err}", flush=True)


def main():
    args = sys.argv[1:]
    plugin_mode = bool(args) and args[0] == "--plugins"
    upstream_mode = bool(args) and args[0] == "--upstream"
    if plugin_mode or upstream_mode:
        args = args[1:]
    if not args or any(a in ("-h", "--help") for a in args):
        sys.exit(__doc__)
    tools = ("valgrind", "callgrind_control", "nginx") + (("openssl",) if plugin_mode else ())
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        sys.exit(f"callgrind: missing {', '.join(missing)}; apt-get install -y valgrind nginx-light openssl")
    b.make_tmp()
    try:
        up = b.free_port()
        b.start_nginx("upstream", b.nginx_upstream_conf(up), b.LOAD_CPU, up)
        cfg = os.path.join(b.TMP, "cfg")
        b.write_weir_config(cfg, up, 0, 1)
        for i, target in enumerate(args):
            if plugin_mode:
                measure_plugins(f"{i}-{os.path.basename(target)}", target, up)
            elif upstream_mode:
                measure_upstream(f"{i}-{os.path.basename(target)}", target, up)
            elif target == "nginx":
                port = b.free_port()
                conf = b.nginx_proxy_conf(port, b.free_port(), up)
                conf = conf.replace("worker_processes 1;", "worker_processes 1;\nmaster_process off;\ndaemon off;")
                path = os.path.join(b.TMP, "nginx-cg.conf")
                with open(path, "w") as f:
                    f.write(conf)
                os.makedirs(os.path.join(b.TMP, "nginx-cg"), exist_ok=True)
                measure("nginx", ["nginx", "-p", os.path.join(b.TMP, "nginx-cg"), "-e",
                                  os.path.join(b.TMP, "nginx-cg.err"), "-c", path], port)
            else:
                port, admin = b.free_port(), b.free_port()
                measure(f"{i}-{os.path.basename(target)}", weir_argv(target, cfg, port, admin), port)
        if os.environ.get("KEEP_TMP") == "1":
            b.log(f"callgrind files kept in {b.TMP} (callgrind_annotate --inclusive=yes FILE)")
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
