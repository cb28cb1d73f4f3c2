"""The `multicore` figure of bench/bench.py: two workers each, HTTP/1.1 keep-alive.

  weir-per-core       WEIR_WORKER_THREADS=2 --runtime per-core (two current-thread runtimes,
                      one SO_REUSEPORT socket each)
  weir-work-stealing  WEIR_WORKER_THREADS=2 --runtime work-stealing (one multi-thread runtime)
  nginx               worker_processes 2, `listen ... reuseport` (one socket per worker, as
                      weir per-core), upstream keepalive 32
  haproxy             nbthread 2
  caddy               GOMAXPROCS=2

Placement: this machine has two cores and a two-worker proxy needs both, so the proxies, the
load generator (`wrk -t2 -c64`) and the upstream (its own nginx, `worker_processes 2`,
reuseport) all share CPUs 0-1 (nothing pinned to one core; the proxies get `taskset -c 0,1`,
which is all of them). Requests/s is then what a proxy manages while sharing the cores with
its load, a lower bound that favours the proxy that leaves the most CPU to wrk and the
upstream; CPU time per request (utime+stime of the proxy's processes, all threads, over the
run / requests) is the figure to compare. Rounds are interleaved; ratios are to nginx in the
same round.
"""

import os
import statistics

import benchlib as b

CPUS = "0,1"
WORKERS = 2


def run(peers, rounds, duration, warmup, conns, row, fmt, ratio_text, interleave):
    conns = max(conns, 64)
    up_port = b.free_port()
    b.start_nginx("upstream-mc", b.nginx_upstream_conf(up_port, workers=WORKERS, name="upstream-mc"), CPUS, up_port)
    cfg = os.path.join(b.TMP, "weir-mc-config")
    b.write_weir_config(cfg, up_port, 0, 1)
    targets = {}
    procs = []
    for runtime in ("per-core", "work-stealing"):
        port, admin = b.free_port(), b.free_port()
        p = b.start_weir(f"weir-{runtime}", cfg, port, admin, workers=WORKERS, runtime=runtime, cpus=CPUS)
        targets[f"weir-{runtime}"] = (lambda p=p: [p.pid], port)
        procs.append(p)
    if "nginx" in peers:
        port = b.free_port()
        # Its own pid and error log: the 1-worker nginx of the other figures may still run.
        conf = b.nginx_proxy_conf(port, b.free_port(), up_port, workers=WORKERS, name="nginx-mc")
        ng = b.start_nginx("nginx-mc", conf, CPUS, port)
        targets["nginx"] = (lambda: b.proc_tree(ng.pid), port)
        procs.append(ng)
    if "haproxy" in peers:
        port = b.free_port()
        ha = b.start_haproxy(up_port, port, b.free_port(), name="haproxy-mc", threads=WORKERS, cpus=CPUS)
        targets["haproxy"] = (lambda: b.proc_tree(ha.pid), port)
        procs.append(ha)
    if "caddy" in peers:
        port = b.free_port()
        cd = b.start_caddy("caddy-mc", up_port, port, cpus=CPUS, procs=WORKERS)
        targets["caddy"] = (lambda: b.proc_tree(cd.pid), port)
        procs.append(cd)

    def run_one(name):
        pids_fn, port = targets[name]

        def once(seconds, warm):
            return b.parse_wrk(b.wrk(port, seconds or duration, conns, threads=2, cpus=CPUS))
        return b.measure(pids_fn, once, warmup)

    res = interleave(list(targets), run_one, rounds, f"multicore ({WORKERS} workers)")
    row(f"multicore: {WORKERS} workers each, h1 keep-alive, wrk -t2 -c{conns}; proxy, wrk and upstream "
        f"share CPUs {CPUS}", "")
    weirs = [n for n in targets if n.startswith("weir-")]
    ref = "nginx" if "nginx" in targets else None
    for name in weirs:
        w_cpu = [x["cpu_us_per_req"] for x in res[name]]
        w_rps = [x["rps"] for x in res[name]]
        for peer in [p for p in targets if p not in weirs]:
            _, txt = ratio_text(w_cpu, [x["cpu_us_per_req"] for x in res[peer]])
            row(f"  cpu/request, {name}", fmt(statistics.median(w_cpu), "us"), peer,
                fmt(statistics.median(x["cpu_us_per_req"] for x in res[peer]), "us"), txt)
            _, txt = ratio_text(w_rps, [x["rps"] for x in res[peer]])
            row(f"  requests/s, {name}", fmt(statistics.median(w_rps), "rps"), peer,
                fmt(statistics.median(x["rps"] for x in res[peer]), "rps"), txt)
    if len(weirs) == 2:
        a, c = weirs
        for key, unit, what in (("cpu_us_per_req", "us", "cpu/request"), ("rps", "rps", "requests/s")):
            _, txt = ratio_text([x[key] for x in res[a]], [x[key] for x in res[c]])
            row(f"  {what}, weir per-core / work-stealing", fmt(statistics.median(x[key] for x in res[a]), unit),
                "w-s", fmt(statistics.median(x[key] for x in res[c]), unit), txt)
    errs = {n: sum(x["errors"] for x in xs) for n, xs in res.items()}
    busy = {n: round(statistics.median(x["busy"] for x in xs), 2) for n, xs in res.items()}
    b.log(f"multicore errors: {errs}; proxy CPUs busy (median): {busy}; reference {ref}")
    for p in procs:
        b.stop(p)
    return res
