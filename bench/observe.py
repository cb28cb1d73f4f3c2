"""The `observe` figure group of bench/bench.py: what observability costs per request, as
ratios of weir's CPU per request between weir processes that differ only in their flags,
measured in the same interleaved rounds on the 1-route config.

Four weir processes (one worker each, all on the proxy CPU, one measured at a time):

  off      --request-metrics false --access-log off                    (a, the reference)
  metrics  per-request metrics on, access log off (the default in a cluster)     (b)
  log      metrics + JSON access log to a file in the bench's temp dir
           (target <= 1.05x (a), BENCHMARKING.md)                               (c)
  trace    metrics + tracing at 1% sampling to a local OTLP/HTTP receiver
           (target <= 1.03x (b), the issue's figure)                            (d)

The access-log writer thread and the trace exporter run inside the weir process, pinned to
the same CPU, so their work is in the measured CPU time. The OTLP receiver is a Python
HTTP server on the load CPU that answers 200 to every POST (it counts the requests it got,
to show spans were exported). Before measuring, the `log` process must have written lines
and `/metrics` of every process must show (or not show) `weir_http_requests_total`.
"""

import http.server
import os
import statistics
import threading
import urllib.request

import benchlib as b

VARIANTS = [
    ("off", "metrics off, access log off", ["--request-metrics", "false"]),
    ("metrics", "metrics on (default)", []),
    ("log", "metrics + JSON access log to a file", None),  # args need the temp dir
    ("trace", "metrics + tracing 1% (OTLP/HTTP)", None),
]
# variant -> (reference variant, target ratio)
TARGETS = {"log": ("off", 1.05), "trace": ("metrics", 1.03)}


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        _Receiver.posts += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def metrics_text(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def run(up_port, rounds, duration, warmup, conns, row, fmt, ratio_text, interleave):
    """Starts its weir processes and the receiver, measures, adds the rows, stops them."""
    cfg = os.path.join(b.TMP, "observe")
    b.write_weir_config(cfg, up_port, 0, 1)
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    log_path = os.path.join(b.TMP, "observe-access.log")
    args = {
        "off": ["--request-metrics", "false"],
        "metrics": [],
        "log": ["--access-log", log_path],
        "trace": ["--otlp-endpoint", f"http://127.0.0.1:{receiver.server_address[1]}",
                  "--trace-sampling", "0.01"],
    }
    procs = {}
    try:
        for name, _, _ in VARIANTS:
            port, admin = b.free_port(), b.free_port()
            procs[name] = (b.start_weir(f"weir-observe-{name}", cfg, port, admin, extra=args[name]), port, admin)
        # Each process does what it says before it is measured.
        for name, (_, port, admin) in procs.items():
            for _ in range(5):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            has = "weir_http_requests_total{" in metrics_text(admin)
            if has != (name != "off"):
                raise SystemExit(f"bench: weir-observe-{name}: per-request metrics {'present' if has else 'absent'}")
        if not os.path.exists(log_path) or os.path.getsize(log_path) == 0:
            raise SystemExit("bench: the access log file stayed empty")

        def run_one(name):
            proc, port, _ = procs[name]

            def go(seconds, warm):
                return b.parse_wrk(b.wrk(port, seconds or duration, conns, path="/"))
            return b.measure(lambda: [proc.pid], go, warmup)
        res = interleave([v[0] for v in VARIANTS], run_one, rounds, "observe")
        for name, label, _ in VARIANTS:
            w = [x["cpu_us_per_req"] for x in res[name]]
            ref_name, target = TARGETS.get(name, ("off", None))
            ref = [x["cpu_us_per_req"] for x in res[ref_name]]
            med, rtxt = ratio_text(w, ref) if name != "off" else (1.0, "1.00x")
            row(f"cpu/request, {label}", fmt(statistics.median(w), "us"), VARIANTS[[v[0] for v in VARIANTS].index(ref_name)][1],
                fmt(statistics.median(ref), "us"), rtxt, f"<= {target}x" if target else "-",
                ("yes" if med <= target else "no") if target else "-")
            row(f"  requests/s, {label}", fmt(statistics.median(x["rps"] for x in res[name]), "rps"))
        trace_admin = procs["trace"][2]
        exported = [l for l in metrics_text(trace_admin).splitlines()
                    if l.startswith("weir_trace_spans_") and not l.startswith("#")]
        b.log(f"observe: OTLP receiver got {_Receiver.posts} export requests; {'; '.join(exported)}")
        dropped = [l for l in metrics_text(procs["log"][2]).splitlines() if l.startswith("weir_access_log_dropped_total")]
        b.log(f"observe: access log {os.path.getsize(log_path) / 1e6:.0f} MB written; {'; '.join(dropped)}")
        errs = {n: sum(x["errors"] for x in xs) for n, xs in res.items()}
        if any(errs.values()):
            row("observe: non-2xx or socket errors", str(sum(errs.values())), "", "", str(errs), "0", "no")
    finally:
        for proc, _, _ in procs.values():
            b.stop(proc)
        receiver.shutdown()
        if os.path.exists(log_path):
            os.remove(log_path)
