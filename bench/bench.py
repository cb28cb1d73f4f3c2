#!/usr/bin/env python3
"""weir vs nginx, haproxy and caddy on loopback, as described in ../shared/BENCHMARKING.md.

Starts a static upstream (nginx `return 200`, pinned on CPU 1), weir (one tokio worker,
pinned on CPU 0; `weir run`'s defaults: per-request metrics on, and the access log off),
nginx (one worker, upstream keep-alive, CPU 0), haproxy (one thread, CPU 0) and caddy
(GOMAXPROCS=1, upstream keep-alive, h1 + h2c on one port, CPU 0) proxying the same route,
and weir instances with 1, 1k, 10k and 100k routes. Figures (FIGURES, comma-separated,
default all):

  core     interleaved `wrk -t1 -c32` rounds: proxy CPU time per request (utime+stime from
           /proc/<pid>/stat over the run / requests, and each part alone), saturation
           requests/s, wrk latency; weir's kernel time per request alone as a ratio of each
           peer's whole CPU per request (what the CPU target leaves to user space)
  latency  open-loop fixed rate (weir-loadgen) at LAT_LOAD x weir's saturation: p50/p99
           from the scheduled send time, added over the upstream measured directly
  h2       h2load (h2c prior knowledge, -c32 -m10): CPU/request and requests/s
  multicore two workers each (bench/multicore.py): weir --runtime per-core and
           --runtime work-stealing vs nginx worker_processes 2 (reuseport), haproxy
           nbthread 2, caddy GOMAXPROCS=2; proxies, wrk -t2 and the upstream share CPUs
           0-1: CPU/request and requests/s as ratios to each peer, per-core / work-stealing
  scaling  weir at SCALE_NS routes (Prefix /r<i>, ROUTES_PER_FILE per file): first-load
           parse and compile time, Pss, memory per route, CPU/request with random paths
  reload   one route changed (file renamed into place) -> live, polled every 1 ms, at the
           largest two SCALE_NS; errors and server-closed connections under fixed-rate load
           while a route file is rewritten every RELOAD_EVERY_MS (and nginx under SIGHUP)
  plugins  weir alone: CPU/request on routes with jwt RS256 (cached verification), a local
           rateLimit, both, and a Redis rateLimit (a redis-server it starts), as ratios to a
           no-plugin route of the same weir in the same round (bench/plugins.py)
  tls      weir vs nginx (and caddy) with the same certificate: CPU/request over TLS 1.3 (h1 keep-alive
           and h2), new handshakes per second per core, and the WebSocket echo round trip
           added over direct, and weir's HTTP/2 (h2c, gRPC) upstream path vs its HTTP/1.1 one
           (bench/edge.py)
  upstream weir alone: CPU/request through BackendPolicies (LeastRequest, ConsistentHash,
           a closed circuit breaker, all together) as ratios to a route without one
           (bench/upstream.py)
  cache    weir alone: CPU/request of a response-cache hit vs a proxied request of the same
           weir in the same round, target <= 0.6x (bench/cache.py)
  observe  weir alone: CPU/request with per-request metrics, metrics + JSON access log, and
           metrics + tracing at 1% sampling, as ratios to metrics and access log off
           (bench/observe.py)
  aggregate weir alone: a two-part aggregate request (API composition) vs two sequential
           proxied requests: CPU/request and one-at-a-time latency (bench/aggregate.py)
  kube     Kubernetes mode against the API server double (weir-kube-bench): KUBE_ROUTES
           (10000) Routes, then one new Route created through the double's API, from the
           create's answer until the proxy serves it (polled every 0.5 ms), CHANGES per
           round, ROUNDS rounds; target <= 15 ms (issue 16)
  idle     idle Pss

Prints one line per figure: weir's value, the peer's, the median of per-round ratios
(min..max), the target and whether it holds. Installs nothing: it names the Debian packages
it needs and exits 2. Stops every process it started by pid; removes its temp dir.

Environment: QUICK=1 (about 3 minutes), ROUNDS (5), DURATION (s, 5), WARMUP (s, 1),
CONNECTIONS (32), PEERS ("nginx,haproxy,caddy"), FIGURES, SCALE_NS ("1,1000,10000,100000"),
ROUTES_PER_FILE (1000), CHANGES (20), LAT_LOAD (0.3), NO_BUILD=1, TARGET_DIR, KEEP_TMP=1.
"""

import atexit
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no bench/__pycache__ in the tree
import aggregate  # noqa: E402
import benchlib as b  # noqa: E402
import cache  # noqa: E402
import edge  # noqa: E402
import multicore  # noqa: E402
import observe  # noqa: E402
import plugins  # noqa: E402
import upstream  # noqa: E402

QUICK = os.environ.get("QUICK") == "1"
ROUNDS = int(os.environ.get("ROUNDS", "2" if QUICK else "5"))
DURATION = int(os.environ.get("DURATION", "2" if QUICK else "5"))
WARMUP = int(os.environ.get("WARMUP", "1"))
CONNS = int(os.environ.get("CONNECTIONS", "32"))
PEERS = [p for p in os.environ.get("PEERS", "nginx,haproxy,caddy").split(",") if p]
FIGURES = set(os.environ.get("FIGURES", "core,latency,h2,multicore,tls,plugins,cache,upstream,observe,aggregate,scaling,reload,kube,idle").split(","))
SCALE_NS = [int(x) for x in os.environ.get("SCALE_NS", "1,1000,10000,100000").split(",") if x]
PER_FILE = int(os.environ.get("ROUTES_PER_FILE", "1000"))
CHANGES = int(os.environ.get("CHANGES", "8" if QUICK else "20"))
LAT_LOAD = float(os.environ.get("LAT_LOAD", "0.3"))
RELOAD_EVERY_MS = int(os.environ.get("RELOAD_EVERY_MS", "100"))

ROWS = []


def row(figure, weir, peer="", peer_value="", ratio="", target="-", holds="-"):
    ROWS.append((figure, weir, peer, peer_value, ratio, target, holds))


def fmt(v, unit):
    if v is None or v != v:  # NaN
        return "n/a"
    return {"rps": f"{v:,.0f}/s", "us": f"{v:.1f}us", "ms": f"{v:.1f}ms", "MiB": f"{v:.1f}MiB",
            "KiB": f"{v:.2f}KiB"}.get(unit, f"{v:.3g}")


def ratio_text(ws, ps):
    ratios = [a / c for a, c in zip(ws, ps) if c]
    if not ratios:
        return float("nan"), "n/a"
    med = statistics.median(ratios)
    return med, f"{med:.2f}x ({min(ratios):.2f}..{max(ratios):.2f})"


def pctl(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def interleave(targets, run_one, rounds, label):
    """Runs `run_one(name)` for every target, `rounds` times, interleaved."""
    out = {n: [] for n in targets}
    for r in range(rounds):
        for n in targets:
            res = run_one(n)
            out[n].append(res)
            b.log(f"{label} round {r + 1} {n}: " + ", ".join(
                f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()
                if k in ("rps", "cpu_us_per_req", "busy", "p50", "p99", "p50_us", "errors", "non_2xx", "reconnects")))
    return out


def compare(results, peers, figures):
    for peer in peers:
        for label, key, unit, target, ok in figures:
            w = [x[key] for x in results["weir"]]
            p = [x[key] for x in results[peer]]
            med, rtxt = ratio_text(w, p)
            holds = "-" if ok is None else ("yes" if ok(med) else "no")
            row(label, fmt(statistics.median(w), unit), peer, fmt(statistics.median(p), unit), rtxt, target, holds)


def core(proxies):
    def run_one(name):
        pids_fn, port, _ = proxies[name]

        def run(seconds, warm):
            out = b.wrk(port, seconds or DURATION, CONNS, latency=not warm)
            return b.parse_wrk(out)
        return b.measure(pids_fn, run, WARMUP)
    results = interleave(list(proxies), run_one, ROUNDS, "h1")
    compare(results, [p for p in proxies if p != "weir"], [
        ("cpu/request (h1, 1 route; metrics on, log off)", "cpu_us_per_req", "us", "<= 0.9x", lambda x: x <= 0.9),
        (f"requests/s (saturation, wrk -c{CONNS})", "rps", "rps", ">= 1.1x", lambda x: x >= 1.1),
        ("latency p50 at saturation (wrk)", "p50", "us", "-", None),
        ("latency p99 at saturation (wrk)", "p99", "us", "-", None),
        ("user-space cpu/request (utime)", "user_us_per_req", "us", "-", None),
        ("kernel cpu/request (stime)", "kernel_us_per_req", "us", "-", None),
    ])
    kernel_floor(results)
    return results


def kernel_floor(results):
    """What the CPU target leaves to user space: weir's kernel time per request alone, as a
    ratio of each peer's whole CPU per request in the same round. On loopback the kernel
    part (both proxies make the same 2 reads and 2 writes per request, and a send runs the
    receiver's TCP input) is most of the CPU; when this ratio is near or above the CPU target,
    no user-space work can meet it."""
    for peer in [p for p in results if p != "weir"]:
        kernel = [x["kernel_us_per_req"] for x in results["weir"]]
        whole = [x["cpu_us_per_req"] for x in results[peer]]
        _, rtxt = ratio_text(kernel, whole)
        row("weir kernel cpu/request alone vs the peer's whole cpu/request", fmt(statistics.median(kernel), "us"),
            peer, fmt(statistics.median(whole), "us"), rtxt)


def latency(proxies, up_port, rate):
    targets = {"direct": up_port, **{n: port for n, (_, port, _) in proxies.items()}}
    rounds = max(1, ROUNDS // 2)

    def run_one(name):
        return b.loadgen(["rate", "--addr", f"127.0.0.1:{targets[name]}", "--rate", rate, "--duration", DURATION,
                          "--connections", CONNS], timeout=DURATION + 60)
    res = interleave(list(targets), run_one, rounds, f"fixed-rate {rate}/s")
    for name in proxies:
        for pct in ("p50", "p99"):
            added = [x[f"{pct}_us"] - d[f"{pct}_us"] for x, d in zip(res[name], res["direct"])]
            med = statistics.median(added)
            target, holds = ("<= 50us", "yes" if med <= 50 else "no") if pct == "p50" else ("-", "-")
            shown = name if name != "weir" else ""
            label = f"{pct} added over direct at {rate}/s" + (f" ({name})" if shown else "")
            row(label, fmt(med, "us"), "", f"direct {fmt(statistics.median(x[f'{pct}_us'] for x in res['direct']), 'us')}",
                f"{min(added):.1f}..{max(added):.1f}us", target if name == "weir" else "-",
                holds if name == "weir" else "-")
    late = statistics.median(x["dispatch_late_p50_us"] for xs in res.values() for x in xs)
    errs = {n: sum(x["non_2xx"] + x["errors"] for x in xs) for n, xs in res.items()}
    b.log(f"fixed-rate: dispatcher lateness p50 {late:.1f}us; errors {errs}")


def h2(proxies):
    def run_one(name):
        pids_fn, _, h2port = proxies[name]

        def run(seconds, warm):
            return b.parse_h2load(b.h2load(h2port, seconds or DURATION, CONNS, 10))
        return b.measure(pids_fn, run, WARMUP)
    results = interleave(list(proxies), run_one, max(1, ROUNDS // 2 + 1), "h2")
    compare(results, [p for p in proxies if p != "weir"], [
        ("cpu/request (h2c, h2load -c32 -m10)", "cpu_us_per_req", "us", "-", None),
        ("requests/s (h2c, h2load -c32 -m10)", "rps", "rps", "-", None),
    ])
    errs = {n: sum(x["errors"] for x in xs) for n, xs in results.items()}
    b.log(f"h2 errors: {errs}")


def lua_random_paths(n):
    path = os.path.join(b.TMP, f"random-{n}.lua")
    with open(path, "w") as f:
        f.write(f"math.randomseed(42)\nlocal n = {n}\n"
                "request = function() return wrk.format(\"GET\", \"/r\" .. math.random(0, n - 1) .. \"/x\") end\n")
    return path


def start_scaled(n, up_port):
    cfg = os.path.join(b.TMP, f"cfg-{n}")
    files = b.write_weir_config(cfg, up_port, n, PER_FILE)
    port, admin = b.free_port(), b.free_port()
    name = f"weir-{n}"
    t0 = time.time()
    p = b.start_weir(name, cfg, port, admin, ready_path="/r0/x", timeout=60 + n / 500)
    ready_s = time.time() - t0
    time.sleep(0.5)
    pss = b.pss_kib([p.pid]) / 1024
    anon = b.pss_kib([p.pid], "Pss_Anon") / 1024
    times = b.weir_publish_times(name)
    load_ms, compile_ms, _ = times[0] if times else (float("nan"), float("nan"), 0)
    b.log(f"{name}: ready in {ready_s:.1f}s, load {load_ms:.0f}ms, compile {compile_ms:.0f}ms, Pss {pss:.1f}MiB")
    return {"proc": p, "port": port, "cfg": cfg, "files": files, "name": name, "pss": pss, "anon": anon,
            "load_ms": load_ms, "compile_ms": compile_ms}


def scaling(up_port):
    inst = {}
    for n in SCALE_NS:
        inst[n] = start_scaled(n, up_port)
    scripts = {n: lua_random_paths(n) for n in SCALE_NS}

    def run_one(n):
        i = inst[n]

        def run(seconds, warm):
            return b.parse_wrk(b.wrk(i["port"], seconds or DURATION, CONNS, script=scripts[n]))
        return b.measure(lambda: [i["proc"].pid], run, WARMUP)
    res = interleave(SCALE_NS, run_one, max(1, ROUNDS - 1), "scaling")
    base = SCALE_NS[0]
    for n in SCALE_NS:
        i = inst[n]
        w = [x["cpu_us_per_req"] for x in res[n]]
        med, rtxt = ratio_text(w, [x["cpu_us_per_req"] for x in res[base]])
        big = n == max(SCALE_NS) and n >= 100000
        row(f"cpu/request, {n} routes, random paths", fmt(statistics.median(w), "us"), f"{base} route",
            fmt(statistics.median(x["cpu_us_per_req"] for x in res[base]), "us"), rtxt,
            "<= 1.1x" if big else "-", ("yes" if med <= 1.1 else "no") if big else "-")
        row(f"requests/s, {n} routes, random paths", fmt(statistics.median(x["rps"] for x in res[n]), "rps"))
        ctarget = {10000: 50, 100000: 500}.get(n)
        row(f"full compile, {n} routes (parse {fmt(i['load_ms'], 'ms')})", fmt(i["compile_ms"], "ms"), "", "", "",
            f"<= {ctarget}ms" if ctarget else "-",
            ("yes" if i["compile_ms"] <= ctarget else "no") if ctarget else "-")
        # Per Route from the anonymous (heap) part alone: the instances start one after the
        # other, so the shared pages of the binary are split two ways in one and four ways in
        # another, which moved a Pss difference by ~0.6 MiB between runs.
        per_route = (i["anon"] - inst[base]["anon"]) * 1024 / max(1, n - base) if n > base else None
        row(f"Pss, {n} routes (anonymous {fmt(i['anon'], 'MiB')})", fmt(i["pss"], "MiB"), "", "",
            f"{fmt(per_route, 'KiB')}/route" if per_route is not None else "",
            "<= 2KiB/route" if n >= 10000 else "-",
            ("yes" if per_route <= 2 else "no") if n >= 10000 and per_route is not None else "-")
    errs = {n: sum(x["errors"] for x in xs) for n, xs in res.items()}
    b.log(f"scaling errors: {errs}")
    return inst


def reload_live(inst):
    for n in [n for n in SCALE_NS if n >= 10000] or SCALE_NS[-1:]:
        i = inst[n]
        path0, chunk = i["files"][0]
        stage = os.path.join(b.TMP, f"stage-{n}")
        os.makedirs(stage, exist_ok=True)
        manifest = []
        moved = list(chunk)
        for k in range(CHANGES):
            idx = k % len(moved)
            moved[idx] = (moved[idx][0], f"/moved{n}-{k}")
            src = os.path.join(stage, f"change-{k}.yaml")
            with open(src, "w") as f:
                f.write(b.route_file_text(moved))
            manifest.append(f"{src}\t{path0}\t/moved{n}-{k}/x")
        mpath = os.path.join(stage, "manifest.tsv")
        with open(mpath, "w") as f:
            f.write("\n".join(manifest) + "\n")
        before = len(b.weir_publish_times(i["name"]))
        out = b.loadgen(["reload-live", "--addr", f"127.0.0.1:{i['port']}", "--manifest", mpath,
                         "--gap-ms", 150, "--interval-us", 1000, "--timeout-ms", 20000],
                        timeout=CHANGES * 25 + 30)
        live = out["live_ms"]
        times = b.weir_publish_times(i["name"])[before:]
        target = {10000: 10, 100000: 50}.get(n)
        p99 = pctl(live, 99)
        row(f"route change live, {n} routes, p50/p99 of {len(live)}",
            f"{pctl(live, 50):.1f}/{p99:.1f}ms", "", f"timeouts {out['timeouts']}", "",
            f"<= {target}ms p99" if target else "-",
            ("yes" if p99 <= target and not out["timeouts"] else "no") if target else "-")
        if times:
            row(f"  of which reload parse / compile, {n} routes",
                f"{statistics.median(t[0] for t in times):.1f}/{statistics.median(t[1] for t in times):.1f}ms")


def kube_watch():
    """New Route in Kubernetes mode -> live, against the API server double."""
    import json
    n = int(os.environ.get("KUBE_ROUTES", "10000"))
    bench = os.path.join(b.TARGET_DIR, "release", "weir-kube-bench")
    weir = os.path.join(b.TARGET_DIR, "release", "weir")
    live = []
    for _ in range(ROUNDS):
        out = subprocess.run(["taskset", "-c", b.LOAD_CPU, bench, "--weir", weir, "--routes", str(n),
                              "--changes", str(CHANGES), "--cpu", b.PROXY_CPU],
                             capture_output=True, text=True, timeout=600, check=True)
        live.extend(json.loads(out.stdout.strip().splitlines()[-1])["live_ms"])
    p50, p99 = pctl(live, 50), pctl(live, 99)
    row(f"kube: new Route -> live, {n} Routes (API double), p50/p99 of {len(live)}",
        f"{p50:.1f}/{p99:.1f}ms", "", "", "", "<= 15ms p50", "yes" if p50 <= 15 else "no")


def reload_under_load(inst, proxies):
    n = next((n for n in SCALE_NS if n >= 10000), SCALE_NS[-1])
    i = inst[n]
    if len(i["files"]) < 3:
        row(f"errors during reloads ({n} routes)", "skipped", "", "", "needs >= 3 route files")
        return
    # Rewrite the last file (its last route flips path), send traffic to a middle file's
    # routes (untouched by reload_live, which changes the first file).
    path0, chunk = i["files"][-1]
    seconds = max(4, DURATION + 2)
    paths = os.path.join(b.TMP, "reload-paths.txt")
    with open(paths, "w") as f:
        f.write("\n".join(f"{p}/x" for _, p in i["files"][len(i["files"]) // 2][1]) + "\n")
    rate = int(os.environ.get("RELOAD_RATE", "5000"))
    variants = [os.path.join(b.TMP, f"reload-variant-{k}.yaml") for k in range(2)]
    gen = b.loadgen_start(["rate", "--addr", f"127.0.0.1:{i['port']}", "--rate", rate, "--duration", seconds,
                           "--connections", CONNS, "--paths-file", paths], "reload-load-weir")
    before = len(b.weir_publish_times(i["name"]))
    deadline = time.time() + seconds
    k = 0
    time.sleep(0.3)
    while time.time() < deadline - 0.5 and k < 1000:
        moved = list(chunk)
        moved[-1] = (moved[-1][0], f"/flip{k}")
        tmp = variants[k % 2]
        with open(tmp, "w") as f:
            f.write(b.route_file_text(moved))
        os.replace(tmp, path0)
        k += 1
        time.sleep(RELOAD_EVERY_MS / 1000)
    gen.wait(timeout=seconds + 60)
    res = b.read_json_log("reload-load-weir")
    # Let the last reloads land (each is logged when published), bounded.
    settle = time.time() + 30
    count = len(b.weir_publish_times(i["name"]))
    while time.time() < settle:
        time.sleep(1.5)
        now = len(b.weir_publish_times(i["name"]))
        if now == count:
            break
        count = now
    reloads = count - before
    errors = res["non_2xx"] + res["errors"]
    row(f"errors during reloads ({reloads} reloads, {n} routes, {rate}/s)", str(errors), "", "",
        f"of {res['ok'] + errors} requests", "0", "yes" if errors == 0 else "no")
    row("closed keep-alive connections during reloads", str(res["reconnects"]), "", "", "", "0",
        "yes" if res["reconnects"] == 0 else "no")
    if "nginx" in proxies:
        ng_proc = proxies["nginx"][3]
        gen = b.loadgen_start(["rate", "--addr", f"127.0.0.1:{proxies['nginx'][1]}", "--rate", rate,
                               "--duration", seconds, "--connections", CONNS], "reload-load-nginx")
        deadline = time.time() + seconds
        sighups = 0
        time.sleep(0.3)
        while time.time() < deadline - 1 and sighups < 100:
            os.kill(ng_proc.pid, signal.SIGHUP)
            sighups += 1
            time.sleep(0.5)
        gen.wait(timeout=seconds + 60)
        nres = b.read_json_log("reload-load-nginx")
        row(f"  nginx under SIGHUP x{sighups}: errors / closed conns",
            f"{nres['non_2xx'] + nres['errors']}/{nres['reconnects']}")


def print_table(header):
    print()
    print(header)
    hdr = f"{'figure':<52} {'weir':>13} {'peer':>8} {'peer value':>16} {'ratio (min..max)':>22} {'target':>14}  holds"
    print(hdr)
    print("-" * len(hdr))
    for fig, w, peer, pv, ratio, target, holds in ROWS:
        print(f"{fig:<52} {w:>13} {peer:>8} {pv:>16} {ratio:>22} {target:>14}  {holds}")


def main():
    b.check_tools(PEERS, "h2" in FIGURES)
    atexit.register(b.cleanup)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, b.on_signal)
    if os.environ.get("NO_BUILD") != "1":
        b.log("building release binaries")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "weir-controller", "-p", "weir-e2e", "--bins"],
                       cwd=b.ROOT, check=True, timeout=3600)
    for binary in ("weir", "weir-loadgen", "weir-kube-bench"):
        if not os.path.exists(os.path.join(b.TARGET_DIR, "release", binary)):
            sys.exit(f"bench: {b.TARGET_DIR}/release/{binary} is missing; build it or unset NO_BUILD")
    b.make_tmp()
    started = time.time()

    up_port = b.free_port()
    b.start_nginx("upstream", b.nginx_upstream_conf(up_port), b.LOAD_CPU, up_port)
    cfg = os.path.join(b.TMP, "weir-config")
    b.write_weir_config(cfg, up_port, 0, 1)
    weir_port, admin = b.free_port(), b.free_port()
    weir = b.start_weir("weir", cfg, weir_port, admin)
    time.sleep(0.5)
    idle = {"weir": b.pss_kib([weir.pid]) / 1024}
    proxies = {"weir": (lambda: [weir.pid], weir_port, weir_port, weir)}
    if "nginx" in PEERS:
        port, h2port = b.free_port(), b.free_port()
        ng = b.start_nginx("nginx", b.nginx_proxy_conf(port, h2port, up_port),
                           b.PROXY_CPU, port)
        proxies["nginx"] = (lambda: b.proc_tree(ng.pid), port, h2port, ng)
    if "haproxy" in PEERS:
        port, h2port = b.free_port(), b.free_port()
        ha = b.start_haproxy(up_port, port, h2port)
        proxies["haproxy"] = (lambda: b.proc_tree(ha.pid), port, h2port, ha)
    if "caddy" in PEERS:
        port = b.free_port()
        cd = b.start_caddy("caddy", up_port, port)
        # HTTP/1.1 and h2c (prior knowledge) on the same port.
        proxies["caddy"] = (lambda: b.proc_tree(cd.pid), port, port, cd)
    for name, (pids_fn, *_rest) in proxies.items():
        if name != "weir":
            idle[name] = b.pss_kib(pids_fn()) / 1024
    plain = {n: v[:3] for n, v in proxies.items()}

    saturation = None
    if "core" in FIGURES:
        res = core(plain)
        saturation = statistics.median(x["rps"] for x in res["weir"])
    if "latency" in FIGURES:
        rate = int(float(os.environ.get("LAT_RATE", "0")) or (saturation or 33000) * LAT_LOAD)
        latency(plain, up_port, rate)
    if "h2" in FIGURES:
        h2(plain)
    if "multicore" in FIGURES:
        multicore.run(PEERS, ROUNDS, DURATION, WARMUP, CONNS, row, fmt, ratio_text, interleave)
    if "idle" in FIGURES:
        for peer in [p for p in proxies if p != "weir"]:
            row("idle memory (Pss, all processes)", fmt(idle["weir"], "MiB"), peer, fmt(idle[peer], "MiB"),
                f"{idle['weir'] / idle[peer]:.2f}x")
        row("weir idle memory (Pss)", fmt(idle["weir"], "MiB"), "", "", "", "<= 10MiB",
            "yes" if idle["weir"] <= 10 else "no")
        row("weir memory after load (Pss)", fmt(b.pss_kib([weir.pid]) / 1024, "MiB"))
    if "tls" in FIGURES and "nginx" in PEERS:
        edge.run(up_port, ROUNDS, DURATION, WARMUP, CONNS, row, fmt, ratio_text, interleave, PEERS)
    if "plugins" in FIGURES:
        plugins.run(up_port, ROUNDS, DURATION, WARMUP, CONNS, row, fmt, ratio_text, interleave)
    if "cache" in FIGURES:
        cache.run(up_port, ROUNDS, DURATION, WARMUP, CONNS, row, fmt, ratio_text, interleave)
    if "upstream" in FIGURES:
        upstream.run(up_port, ROUNDS, DURATION, WARMUP, CONNS, row, fmt, ratio_text, interleave)
    if "observe" in FIGURES:
        observe.run(up_port, ROUNDS, DURATION, WARMUP, CONNS, row, fmt, ratio_text, interleave)
    if "aggregate" in FIGURES:
        aggregate.run(up_port, ROUNDS, DURATION, WARMUP, CONNS, row, fmt, ratio_text, interleave)
    # The 1-route proxies are done: stop nginx/haproxy/weir before the scaling instances
    # start (less memory pressure), except nginx if the reload figure wants it.
    inst = {}
    if "scaling" in FIGURES or "reload" in FIGURES:
        b.stop(weir)
        for peer in ("haproxy", "caddy"):
            if peer in proxies:
                b.stop(proxies[peer][3])
        inst = scaling(up_port) if "scaling" in FIGURES else {n: start_scaled(n, up_port) for n in SCALE_NS}
    if "reload" in FIGURES:
        reload_live(inst)
        reload_under_load(inst, {k: v for k, v in proxies.items() if k == "nginx"})

    if "kube" in FIGURES:
        kube_watch()

    print_table(f"weir bench ({'QUICK, ' if QUICK else ''}{ROUNDS} rounds x {DURATION}s +{WARMUP}s warm-up, "
                f"wrk -t1 -c{CONNS}; weir: {b.WEIR_SETUP}; proxy on CPU {b.PROXY_CPU}, load+upstream on CPU {b.LOAD_CPU}; "
                f"2-core shared machine: compare ratios; took {time.time() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as stop:
        # A figure that fails (errors in a run, a peer that did not start) stops the bench:
        # the figures measured before it are still printed.
        if stop.code not in (0, None) and ROWS:
            print_table(f"weir bench: STOPPED ({stop.code}); the figures measured before that:")
        raise
