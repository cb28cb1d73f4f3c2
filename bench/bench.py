#!/usr/bin/env python3
"""weir vs nginx (and haproxy) on loopback, as described in ../shared/BENCHMARKING.md.

Starts a static upstream (nginx `return 200`, pinned on CPU 1), weir (one tokio worker,
pinned on CPU 0) and nginx (one worker, upstream keep-alive, pinned on CPU 0) proxying the
same route, and haproxy (one thread, CPU 0) when it is installed. It runs interleaved rounds
of `wrk -t1 -c32` (pinned on CPU 1), measures requests/s, proxy CPU time per request
(utime+stime from /proc/<pid>/stat, summed over the proxy's processes) and latency
percentiles, and prints one line per figure: weir's value, the peer's value, the median
ratio of the per-round ratios (min..max), the target and whether it holds.

Standard library only. Installs nothing: it prints the Debian packages it needs and exits 2.
Every process it starts is stopped by pid on exit; the temp dir is removed.

Environment: ROUNDS (default 5), DURATION (s, default 5), WARMUP (s, default 1),
CONNECTIONS (default 32), PEERS (default "nginx,haproxy"; haproxy is skipped if missing),
NO_BUILD=1 (use the existing target/release binaries), TARGET_DIR (default target).
"""

import atexit
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
DURATION = int(os.environ.get("DURATION", "5"))
WARMUP = int(os.environ.get("WARMUP", "1"))
CONNS = int(os.environ.get("CONNECTIONS", "32"))
PEERS = [p for p in os.environ.get("PEERS", "nginx,haproxy").split(",") if p]
TARGET_DIR = os.environ.get("TARGET_DIR", os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CPU = "0"
LOAD_CPU = "1"

_procs = []  # Popen objects we started, stopped in reverse order on exit
_extra_pids = []  # child pids (nginx workers) to kill if their master will not stop
_tmp = None


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def cleanup():
    for p in reversed(_procs):
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.time() + 5
    for p in reversed(_procs):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
    for pid in _extra_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _procs.clear()
    if _tmp and os.path.isdir(_tmp):
        shutil.rmtree(_tmp, ignore_errors=True)


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


def check_tools():
    missing = [t for t in ("nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        print("bench: missing tools: " + ", ".join(missing), file=sys.stderr)
        print("bench: install the Debian packages with:", file=sys.stderr)
        print("    apt-get install -y nginx-light wrk haproxy util-linux", file=sys.stderr)
        sys.exit(2)
    if "haproxy" in PEERS and shutil.which("haproxy") is None:
        log("haproxy not found, skipping it (apt-get install -y haproxy)")
        PEERS.remove("haproxy")
    if (os.cpu_count() or 1) < 2:
        log("fewer than 2 CPUs: proxy and load generator will share CPU 0")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, name, env=None):
    out = open(os.path.join(_tmp, f"{name}.log"), "wb")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    _procs.append(p)
    return p


def wait_http(url, what, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    sys.exit(f"bench: {what} not ready at {url} within {timeout}s (logs in {_tmp})")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def proc_tree(pid):
    """The pid plus its direct children (nginx master + workers)."""
    return [pid] + children(pid)


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total


def pss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


NGINX_UPSTREAM_CONF = """
worker_processes 1;
pid {tmp}/upstream.pid;
error_log {tmp}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""

NGINX_PROXY_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

HAPROXY_CONF = """
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server up 127.0.0.1:{upstream}
"""

WEIR_CONF = """
apiVersion: v1
kind: Service
metadata:
  name: upstream
spec:
  ports:
    - {{name: http, port: 80, targetPort: {upstream}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: upstream-local
  labels:
    kubernetes.io/service-name: upstream
addressType: IPv4
ports:
  - {{name: http, port: {upstream}}}
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {{ready: true}}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata:
  name: bench
spec:
  rules:
    - name: all
      matches:
        - path: {{type: Prefix, value: /}}
      backends:
        - {{service: upstream, port: 80}}
"""


def start_nginx(name, conf, cpu, port):
    path = os.path.join(_tmp, f"{name}.conf")
    with open(path, "w") as f:
        f.write(conf)
    prefix = os.path.join(_tmp, name)
    os.makedirs(prefix, exist_ok=True)
    p = start(["taskset", "-c", cpu, "nginx", "-p", prefix, "-e", os.path.join(_tmp, f"{name}-error.log"),
               "-c", path, "-g", "daemon off;"], name)
    wait_http(f"http://127.0.0.1:{port}/", name)
    workers = children(p.pid)
    _extra_pids.extend(workers)
    return p


def start_weir(upstream, port, admin):
    cfg = os.path.join(_tmp, "weir-config")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "bench.yaml"), "w") as f:
        f.write(WEIR_CONF.format(upstream=upstream))
    env = dict(os.environ, WEIR_WORKER_THREADS="1", RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    p = start(["taskset", "-c", PROXY_CPU, os.path.join(TARGET_DIR, "release", "weir"), "run",
               "--config-dir", cfg, "--http-addr", f"127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}"],
              "weir", env=env)
    wait_http(f"http://127.0.0.1:{admin}/readyz", "weir /readyz")
    wait_http(f"http://127.0.0.1:{port}/", "weir proxy route")
    return p


def start_haproxy(upstream, port):
    path = os.path.join(_tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(HAPROXY_CONF.format(port=port, upstream=upstream))
    p = start(["taskset", "-c", PROXY_CPU, "haproxy", "-db", "-f", path], "haproxy")
    wait_http(f"http://127.0.0.1:{port}/", "haproxy")
    return p


UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def parse_wrk(out):
    res = {}
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        res[f"p{pct}"] = float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    res["errors"] = errs
    return res


def wrk(port, seconds, latency=False):
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s"]
    if latency:
        argv.append("--latency")
    argv.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return out


def measure(pids_fn, port):
    """One round: warm-up, then a measured run with CPU ticks read around it."""
    wrk(port, WARMUP)
    pids = pids_fn()
    before = cpu_ticks(pids)
    out = wrk(port, DURATION, latency=True)
    after = cpu_ticks(pids)
    res = parse_wrk(out)
    if res["requests"] == 0:
        sys.exit(f"bench: wrk served no requests on port {port}:\n{out}")
    res["cpu_us_per_req"] = (after - before) / CLK_TCK * 1e6 / res["requests"]
    res["busy"] = (after - before) / CLK_TCK / DURATION
    return res


def fmt(v, unit):
    if v != v:  # NaN
        return "n/a"
    if unit == "rps":
        return f"{v:,.0f}/s"
    if unit == "us":
        return f"{v:.1f}us"
    if unit == "MiB":
        return f"{v:.1f}MiB"
    return f"{v:.3g}"


def main():
    global _tmp
    check_tools()
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if os.environ.get("NO_BUILD") != "1":
        log("building release binaries")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "weir-controller", "-p", "weir-e2e", "--bins"],
                       cwd=ROOT, check=True, timeout=3600)
    _tmp = tempfile.mkdtemp(prefix="weir-bench-")

    up_port, weir_port, admin_port, nginx_port, ha_port = (free_port() for _ in range(5))
    start_nginx("upstream", NGINX_UPSTREAM_CONF.format(tmp=_tmp, port=up_port), LOAD_CPU, up_port)
    weir = start_weir(up_port, weir_port, admin_port)
    time.sleep(0.5)
    weir_idle_pss = pss_kib([weir.pid]) / 1024
    proxies = {"weir": (lambda: [weir.pid], weir_port)}
    if "nginx" in PEERS:
        ng = start_nginx("nginx", NGINX_PROXY_CONF.format(tmp=_tmp, port=nginx_port, upstream=up_port),
                         PROXY_CPU, nginx_port)
        proxies["nginx"] = (lambda: proc_tree(ng.pid), nginx_port)
    if "haproxy" in PEERS:
        ha = start_haproxy(up_port, ha_port)
        proxies["haproxy"] = (lambda: proc_tree(ha.pid), ha_port)
    idle_pss = {"weir": weir_idle_pss}
    for name, (pids_fn, _) in proxies.items():
        if name != "weir":
            idle_pss[name] = pss_kib(pids_fn()) / 1024

    log(f"upstream direct: {WARMUP}s warm-up + {DURATION}s")
    direct = measure(lambda: [], up_port)
    results = {name: [] for name in proxies}
    order = list(proxies)
    total = ROUNDS * len(order) * (WARMUP + DURATION)
    log(f"{ROUNDS} interleaved rounds of {', '.join(order)}: about {total}s")
    for r in range(ROUNDS):
        for name in order:
            pids_fn, port = proxies[name]
            res = measure(pids_fn, port)
            results[name].append(res)
            log(f"round {r + 1} {name}: {res['rps']:,.0f} req/s, {res['cpu_us_per_req']:.2f} us CPU/req, "
                f"proxy CPU busy {res['busy']:.0%}, p50 {res['p50']:.0f}us p99 {res['p99']:.0f}us, "
                f"errors {res['errors']}")
    weir_final_pss = pss_kib([weir.pid]) / 1024

    figures = [
        ("cpu/request (h1 keep-alive, 1 route)", "cpu_us_per_req", "us", "<= 0.9x", lambda x: x <= 0.9),
        ("requests/s (saturation, wrk -c%d)" % CONNS, "rps", "rps", ">= 1.1x", lambda x: x >= 1.1),
        ("latency p50 at saturation", "p50", "us", "-", None),
        ("latency p99 at saturation", "p99", "us", "-", None),
    ]
    print()
    print(f"weir bench: {ROUNDS} rounds x {DURATION}s (+{WARMUP}s warm-up), wrk -t1 -c{CONNS}, "
          f"proxy on CPU {PROXY_CPU}, wrk+upstream on CPU {LOAD_CPU}; medians, ratio = weir/peer "
          f"median of per-round ratios (min..max)")
    print(f"upstream direct (nginx return 200, CPU {LOAD_CPU}): {direct['rps']:,.0f} req/s, "
          f"p50 {direct['p50']:.0f}us")
    hdr = f"{'figure':<40} {'weir':>11} {'peer':>8} {'peer value':>11} {'ratio (min..max)':>22} {'target':>8}  holds"
    print(hdr)
    print("-" * len(hdr))
    for peer in order[1:]:
        for label, key, unit, target, ok in figures:
            w = [x[key] for x in results["weir"]]
            p = [x[key] for x in results[peer]]
            ratios = [a / b for a, b in zip(w, p) if b]
            med = statistics.median(ratios)
            rtxt = f"{med:.2f}x ({min(ratios):.2f}..{max(ratios):.2f})"
            holds = "-" if ok is None else ("yes" if ok(med) else "no")
            print(f"{label:<40} {fmt(statistics.median(w), unit):>11} {peer:>8} "
                  f"{fmt(statistics.median(p), unit):>11} {rtxt:>22} {target:>8}  {holds}")
        iw, ip = idle_pss["weir"], idle_pss[peer]
        print(f"{'idle memory (Pss, all processes)':<40} {fmt(iw, 'MiB'):>11} {peer:>8} {fmt(ip, 'MiB'):>11} "
              f"{f'{iw / ip:.2f}x':>22} {'-':>8}  -")
    holds = "yes" if weir_idle_pss <= 10 else "no"
    print(f"{'weir idle memory (Pss)':<40} {fmt(weir_idle_pss, 'MiB'):>11} {'':>8} {'':>11} {'':>22} "
          f"{'<= 10MiB':>8}  {holds}")
    print(f"{'weir memory after load (Pss)':<40} {fmt(weir_final_pss, 'MiB'):>11}")
    errs = {n: sum(x["errors"] for x in rs) for n, rs in results.items()}
    print("errors (non-2xx + socket errors, all rounds): " + ", ".join(f"{n} {e}" for n, e in errs.items()))
    print("not yet measured: fixed-rate latency (p50 added over direct), HTTP/2 (h2load), route scaling, "
          "reload-to-live, errors during reloads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
