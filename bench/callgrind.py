#!/usr/bin/env python3
"""User-space instructions per proxied request, under valgrind's callgrind.

    python3 bench/callgrind.py target/release/weir [OTHER_WEIR_BINARY ...] [nginx]

Instruction counts do not move with the noise of a shared machine, so this is the way to
A/B two builds of weir (or weir vs nginx) on the request path. Kernel time is not counted.
For each binary: starts the static upstream (nginx, as in bench.py), the proxy under
`valgrind --tool=callgrind` (weir with one worker; nginx with `master_process off`), sends
a warm-up, zeroes the counters (`callgrind_control -z`), sends CG_RATE (300) req/s for CG_SECONDS (5) over 4
keep-alive connections with weir-loadgen, dumps (`callgrind_control -d`) and prints
instructions / answered requests. KEEP_TMP=1 keeps the callgrind files for
`callgrind_annotate --inclusive=yes`. Needs: apt-get install -y valgrind nginx-light.
"""

import glob
import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
import benchlib as b  # noqa: E402

RATE = int(os.environ.get("CG_RATE", "300"))
SECONDS = int(os.environ.get("CG_SECONDS", "5"))


def total_ir(path):
    tot = 0
    for f in glob.glob(path):
        with open(f) as fh:
            for line in fh:
                if line.startswith(("summary:", "totals:")):
                    tot = max(tot, int(line.split()[1]))
    return tot


def measure(name, argv, port):
    out = os.path.join(b.TMP, f"cg-{name}.out")
    p = b.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv, name,
                env=dict(os.environ, WEIR_WORKER_THREADS="1", RUST_LOG="warn"))
    b.wait_http(f"http://127.0.0.1:{port}/", name, timeout=120, proc=p)
    b.loadgen(["rate", "--addr", f"127.0.0.1:{port}", "--rate", RATE, "--duration", 1, "--connections", 4], 120)
    subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True, timeout=60)
    r = b.loadgen(["rate", "--addr", f"127.0.0.1:{port}", "--rate", RATE, "--duration", SECONDS,
                   "--connections", 4], 300)
    subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True, timeout=60)
    time.sleep(1)
    ir = total_ir(out + ".1")
    n = r["ok"]
    print(f"{name}: {ir / max(n, 1):,.0f} instructions/request (user space, {n} requests, "
          f"errors {r['errors'] + r['non_2xx']})", flush=True)
    b.stop(p)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    missing = [t for t in ("valgrind", "callgrind_control", "nginx") if shutil.which(t) is None]
    if missing:
        sys.exit(f"callgrind: missing {', '.join(missing)}; apt-get install -y valgrind nginx-light")
    b.make_tmp()
    try:
        up = b.free_port()
        b.start_nginx("upstream", b.NGINX_UPSTREAM_CONF.format(tmp=b.TMP, port=up), b.LOAD_CPU, up)
        cfg = os.path.join(b.TMP, "cfg")
        b.write_weir_config(cfg, up, 0, 1)
        for i, target in enumerate(sys.argv[1:]):
            if target == "nginx":
                port = b.free_port()
                conf = b.NGINX_PROXY_CONF.format(tmp=b.TMP, port=port, h2port=b.free_port(), upstream=up)
                conf = conf.replace("worker_processes 1;", "worker_processes 1;\nmaster_process off;\ndaemon off;")
                path = os.path.join(b.TMP, "nginx-cg.conf")
                with open(path, "w") as f:
                    f.write(conf)
                os.makedirs(os.path.join(b.TMP, "nginx-cg"), exist_ok=True)
                measure("nginx", ["nginx", "-p", os.path.join(b.TMP, "nginx-cg"), "-e",
                                  os.path.join(b.TMP, "nginx-cg.err"), "-c", path], port)
            else:
                port, admin = b.free_port(), b.free_port()
                measure(f"{i}-{os.path.basename(target)}", [os.path.abspath(target), "run", "--config-dir", cfg, "--http-addr",
                                                   f"127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}"], port)
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
