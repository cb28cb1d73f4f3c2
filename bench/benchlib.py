"""Process handling, configs and load-generator wrappers for bench/bench.py.

Standard library only. Every process is started through `start()` and stopped by pid in
`cleanup()` (also on SIGINT/SIGTERM/SIGHUP); nginx workers are remembered and killed if their
master does not stop. Nothing is installed: `check_tools()` names the Debian packages.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_DIR = os.environ.get("TARGET_DIR", os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CPU = "0"
LOAD_CPU = "1"
PACKAGES = "nginx-light wrk haproxy caddy nghttp2-client util-linux"

_procs = []  # Popen objects we started, stopped in reverse order on exit
_extra_pids = []  # nginx worker pids, killed if their master will not stop
TMP = None


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def make_tmp():
    global TMP
    TMP = tempfile.mkdtemp(prefix="weir-bench-")
    return TMP


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
    if TMP and os.path.isdir(TMP) and os.environ.get("KEEP_TMP") != "1":
        shutil.rmtree(TMP, ignore_errors=True)


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


def check_tools(peers, need_h2):
    needed = ["nginx", "wrk", "taskset"] + (["h2load"] if need_h2 else [])
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        print("bench: missing tools: " + ", ".join(missing), file=sys.stderr)
        print("bench: install the Debian packages with:", file=sys.stderr)
        print(f"    apt-get install -y {PACKAGES}", file=sys.stderr)
        sys.exit(2)
    for peer in ("haproxy", "caddy"):
        if peer in peers and shutil.which(peer) is None:
            log(f"{peer} not found, skipping it (apt-get install -y {peer})")
            peers.remove(peer)
    if (os.cpu_count() or 1) < 2:
        log("fewer than 2 CPUs: proxy and load generator will share CPU 0")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, name, env=None):
    out = open(os.path.join(TMP, f"{name}.log"), "wb")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    _procs.append(p)
    return p


def stop(p):
    """Stops one process we started, by pid, and forgets it."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
    if p in _procs:
        _procs.remove(p)


def wait_http(url, what, timeout=20.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"bench: {what} exited with {proc.returncode} (logs in {TMP})")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    sys.exit(f"bench: {what} not ready at {url} within {timeout}s (logs in {TMP})")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def proc_tree(pid):
    """The pid plus its direct children (nginx master + workers)."""
    return [pid] + children(pid)


def cpu_ticks_split(pids):
    """(user, kernel) clock ticks of `pids`, all threads: utime and stime of /proc/<pid>/stat."""
    user = kernel = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # an nginx worker that exited during a reload
        user += int(fields[11])  # utime (field 14)
        kernel += int(fields[12])  # stime (field 15)
    return user, kernel


def cpu_ticks(pids):
    return sum(cpu_ticks_split(pids))


def pss_kib(pids, field="Pss"):
    """The sum of `field` (kB) of /proc/<pid>/smaps_rollup over `pids`: `Pss` by default,
    `Pss_Anon` for the private heap alone (shared pages of the binary are split between the
    processes that map them, so a Pss depends on how many other weir instances run)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


NGINX_UPSTREAM_CONF = """
worker_processes {workers};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport;
        # More loopback addresses on the same port: several endpoints of one Service
        # (bench/upstream.py).
        listen 127.0.0.2:{port} reuseport;
        listen 127.0.0.3:{port} reuseport;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""

NGINX_PROXY_CONF = """
worker_processes {workers};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port}{reuseport};
        listen 127.0.0.1:{h2port} http2;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

def nginx_upstream_conf(port, workers=1, name="upstream"):
    """The upstream nginx (answers 200 "ok"), `workers` worker processes."""
    return NGINX_UPSTREAM_CONF.format(tmp=TMP, port=port, workers=workers, name=name)


def nginx_proxy_conf(port, h2port, upstream, workers=1, name="nginx"):
    """The nginx proxy peer, `workers` worker processes (more than one: one `reuseport`
    socket per worker, as weir's per-core runtime). `name` keeps its pid and error log apart
    from another nginx of the same run."""
    return NGINX_PROXY_CONF.format(tmp=TMP, port=port, h2port=h2port, upstream=upstream, workers=workers,
                                   name=name, reuseport=" reuseport" if workers > 1 else "")


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
    bind 127.0.0.1:{h2port} proto h2
    default_backend be
backend be
    server up 127.0.0.1:{upstream}
"""

BACKEND_YAML = """apiVersion: v1
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
"""

ROUTE_YAML = """---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata:
  name: {name}
spec:
  rules:
    - matches:
        - path: {{type: Prefix, value: {path}}}
      backends:
        - {{service: upstream, port: 80}}
"""


def route_file_text(names_paths):
    return "".join(ROUTE_YAML.format(name=n, path=p) for n, p in names_paths)


def write_weir_config(cfg, upstream, n_routes, per_file):
    """A config dir: the backend, and `n_routes` Routes `r<i>` on `Prefix /r<i>` (or one
    Route on `Prefix /` when n_routes is 0), `per_file` Routes per file. Returns the route
    files in order, each as (path, [(name, prefix)])."""
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "00-backend.yaml"), "w") as f:
        f.write(BACKEND_YAML.format(upstream=upstream))
    files = []
    if n_routes == 0:
        routes = [("bench", "/")]
        per_file = 1
    else:
        routes = [(f"r{i}", f"/r{i}") for i in range(n_routes)]
    for start in range(0, len(routes), per_file):
        chunk = routes[start:start + per_file]
        path = os.path.join(cfg, f"routes-{start // per_file:05d}.yaml")
        with open(path, "w") as f:
            f.write(route_file_text(chunk))
        files.append((path, chunk))
    return files


def start_nginx(name, conf, cpu, port):
    path = os.path.join(TMP, f"{name}.conf")
    with open(path, "w") as f:
        f.write(conf)
    prefix = os.path.join(TMP, name)
    os.makedirs(prefix, exist_ok=True)
    p = start(["taskset", "-c", cpu, "nginx", "-p", prefix, "-e", os.path.join(TMP, f"{name}-error.log"),
               "-c", path, "-g", "daemon off;"], name)
    wait_http(f"http://127.0.0.1:{port}/", name, proc=p)
    _extra_pids.extend(children(p.pid))
    return p


# How bench.py's weir instances run, said in the output: `weir run`'s defaults except the
# access log (standalone mode would log to stdout by default).
WEIR_SETUP = "metrics on, access log off"


def start_weir(name, cfg, port, admin, ready_path="/", timeout=20.0, extra=(), workers=1, runtime=None,
               cpus=None):
    """weir on PROXY_CPU (or `cpus`) with one worker (or `workers`, served by `--runtime
    runtime`), per-request metrics on (the default of `--request-metrics`, passed explicitly so
    a WEIR_REQUEST_METRICS in the environment cannot change it) and the access log off (what a
    production deployment runs with; standalone mode would log to stdout by default) unless
    `extra` says otherwise."""
    if not any(str(a).startswith("--access-log") and not str(a).startswith("--access-log-format") for a in extra):
        extra = ("--access-log", "off", *extra)
    if not any(str(a).startswith("--request-metrics") for a in extra):
        extra = ("--request-metrics", "true", *extra)
    if runtime:
        extra = ("--runtime", runtime, *extra)
    env = dict(os.environ, WEIR_WORKER_THREADS=str(workers),
               RUST_LOG=os.environ.get("RUST_LOG", "warn,weir_controller::standalone=info,weir_controller::source=info"))
    env.pop("WEIR_RUNTIME", None)
    p = start(["taskset", "-c", cpus or PROXY_CPU, os.path.join(TARGET_DIR, "release", "weir"), "run",
               "--config-dir", cfg, "--http-addr", f"127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}", *extra],
              name, env=env)
    wait_http(f"http://127.0.0.1:{admin}/readyz", f"{name} /readyz", timeout=timeout, proc=p)
    wait_http(f"http://127.0.0.1:{port}{ready_path}", f"{name} proxy route", timeout=timeout, proc=p)
    return p


def weir_publish_times(name):
    """(load_ms, compile_ms, routes) of every `configuration published` log line of `name`."""
    with open(os.path.join(TMP, f"{name}.log"), errors="replace") as f:
        text = f.read()
    pat = r"configuration published.*?routes=(\d+) load_ms=([\d.]+) compile_ms=([\d.]+)"
    return [(float(m.group(2)), float(m.group(3)), int(m.group(1))) for m in re.finditer(pat, text)]


def start_haproxy(upstream, port, h2port, name="haproxy", threads=1, cpus=None):
    path = os.path.join(TMP, f"{name}.cfg")
    with open(path, "w") as f:
        f.write(HAPROXY_CONF.format(port=port, h2port=h2port, upstream=upstream).replace(
            "nbthread 1", f"nbthread {threads}"))
    p = start(["taskset", "-c", cpus or PROXY_CPU, "haproxy", "-db", "-f", path], name)
    wait_http(f"http://127.0.0.1:{port}/", name, proc=p)
    return p


CADDY_CONF = """{{
	admin off
	auto_https off
	servers {{
		protocols {protocols}
	}}
}}
{site} {{
	bind 127.0.0.1
{tls}	reverse_proxy 127.0.0.1:{upstream} {{
		transport http {{
			keepalive 60s
			keepalive_idle_conns_per_host 32
		}}
	}}
}}
"""


def start_caddy(name, upstream, port, cpus=None, procs=1, tls=None):
    """caddy (Go's net/http reverse proxy) on PROXY_CPU (or `cpus`) with GOMAXPROCS=`procs`:
    HTTP/1.1 and h2c (prior knowledge) on one port, or with `tls=(crt, key)` HTTPS (h1, h2)
    for `localhost`; upstream keep-alive (32 idle connections), no access log (caddy logs
    requests only with a `log` directive), admin API and automatic HTTPS off."""
    path = os.path.join(TMP, f"{name}.Caddyfile")
    with open(path, "w") as f:
        f.write(CADDY_CONF.format(
            protocols="h1 h2" if tls else "h1 h2c",
            site=f"https://localhost:{port}" if tls else f"http://:{port}",
            tls=f"\ttls {tls[0]} {tls[1]}\n" if tls else "",
            upstream=upstream))
    home = os.path.join(TMP, f"{name}-home")
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, GOMAXPROCS=str(procs), HOME=home, XDG_DATA_HOME=home, XDG_CONFIG_HOME=home)
    p = start(["taskset", "-c", cpus or PROXY_CPU, "caddy", "run", "--config", path, "--adapter", "caddyfile"],
              name, env=env)
    if tls:
        deadline = time.time() + 20
        while True:
            if p.poll() is not None:
                sys.exit(f"bench: {name} exited with {p.returncode} (logs in {TMP})")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit(f"bench: {name} not listening on {port} (logs in {TMP})")
                time.sleep(0.05)
    else:
        wait_http(f"http://127.0.0.1:{port}/", name, proc=p)
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


def wrk(port, seconds, conns, latency=False, script=None, path="/", headers=(), url=None, threads=1, cpus=None):
    argv = ["taskset", "-c", cpus or LOAD_CPU, "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s"]
    for h in headers:
        argv += ["-H", h]
    if latency:
        argv.append("--latency")
    if script:
        argv += ["-s", script]
    argv.append(url or f"http://127.0.0.1:{port}{path}")
    return subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout


def parse_h2load(out):
    res = {"requests": 0, "rps": 0.0, "errors": 0}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if m:
        res["requests"] = int(m.group(1))
        res["errors"] = int(m.group(3)) + int(m.group(4))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        res["errors"] += int(m.group(3)) + int(m.group(4))
    return res


def h2load(port, seconds, conns, streams, url=None):
    argv = ["taskset", "-c", LOAD_CPU, "h2load", "-t1", f"-c{conns}", f"-m{streams}", "-D", str(seconds),
            url or f"http://127.0.0.1:{port}/"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout


def loadgen(args, timeout):
    """Runs weir-loadgen (pinned on the load CPU) and returns its JSON output."""
    argv = ["taskset", "-c", LOAD_CPU, os.path.join(TARGET_DIR, "release", "weir-loadgen")] + [str(a) for a in args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def loadgen_start(args, name):
    """Starts weir-loadgen in the background (stdout in TMP/name.log)."""
    argv = ["taskset", "-c", LOAD_CPU, os.path.join(TARGET_DIR, "release", "weir-loadgen")] + [str(a) for a in args]
    return start(argv, name)


def read_json_log(name):
    with open(os.path.join(TMP, f"{name}.log")) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def measure(pids_fn, run, warmup):
    """One round: warm-up, then a measured run with the proxy's CPU ticks read around it.
    `run(seconds)` returns a dict with at least `requests`."""
    if warmup:
        run(warmup, warm=True)
    pids = pids_fn()
    user0, kernel0 = cpu_ticks_split(pids)
    t0 = time.time()
    res = run(None, warm=False)
    elapsed = time.time() - t0
    user1, kernel1 = cpu_ticks_split(pids)
    if res["requests"] == 0:
        sys.exit(f"bench: no requests served: {res}")
    per_req = 1e6 / CLK_TCK / res["requests"]
    before, after = user0 + kernel0, user1 + kernel1
    res["cpu_us_per_req"] = (after - before) * per_req
    res["user_us_per_req"] = (user1 - user0) * per_req
    res["kernel_us_per_req"] = (kernel1 - kernel0) * per_req
    res["busy"] = (after - before) / CLK_TCK / max(elapsed, 1e-3)
    return res
