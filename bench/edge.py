"""The `tls` and `ws` figure groups of bench/bench.py: weir vs nginx over HTTPS, and the
WebSocket round trip each proxy adds.

tls   One ECDSA P-256 certificate (made with the `openssl` CLI in the bench's temp dir) is
      served by weir (a Route with `tls.secretRef`, `--https-addr`), by nginx (`listen ssl`,
      `http2`) and by caddy (with PEERS: `tls CRT KEY`, h1 + h2, GOMAXPROCS=1), all proxying
      to the same upstream:
        - CPU per request over TLS 1.3, HTTP/1.1 keep-alive (`wrk -c32` over https)
        - CPU per request over TLS 1.3, HTTP/2 (`h2load -c32 -m10` over https, ALPN h2)
        - new TLS handshakes per second per core: `wrk` with `Connection: close`, so every
          request is a new connection and a full handshake (wrk does not resume sessions);
          the proxy's CPU per connection and connections/s, as ratios to nginx
h2c   weir alone, h2load (h2c, -c32 -m10) on two routes of the same weir: one to the HTTP/1.1
      upstream, one to a Service with `appProtocol: kubernetes.io/h2c` on an nginx `http2`
      (prior knowledge) upstream: CPU per request of the HTTP/2 upstream path as a ratio to
      the HTTP/1.1 one (what gRPC backends cost; nginx cannot proxy to an h2c upstream
      outside grpc_pass, so there is no peer).
ws    A WebSocket echo origin (Python asyncio, on CPU 1) reached directly, through weir and
      through nginx (`proxy_set_header Upgrade`), by one client sending 64-byte text frames
      one at a time: the median round trip added over direct, as a ratio to nginx's.

Standard library only; `openssl` comes with the Debian packages bench.py names.
"""

import asyncio
import base64
import hashlib
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

import benchlib as b

NGINX_H2C_UPSTREAM_CONF = """
worker_processes 1;
pid {tmp}/upstream-h2c.pid;
error_log {tmp}/upstream-h2c-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{h2port} http2;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""

NGINX_TLS_CONF = """
worker_processes 1;
pid {tmp}/nginx-tls.pid;
error_log {tmp}/nginx-tls-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 32;
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        listen 127.0.0.1:{wsport};
        server_name localhost;
        ssl_certificate {tmp}/tls.crt;
        ssl_certificate_key {tmp}/tls.key;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /ws {{
            proxy_pass http://127.0.0.1:{wsorigin};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
    }}
}}
"""

WEIR_TLS_YAML = """apiVersion: v1
kind: Secret
metadata:
  name: bench-tls
type: kubernetes.io/tls
stringData:
  tls.crt: |
{crt}
  tls.key: |
{key}
---
apiVersion: v1
kind: Service
metadata:
  name: wsorigin
spec:
  ports:
    - {{name: ws, port: 80, targetPort: {wsorigin}, appProtocol: kubernetes.io/ws}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: wsorigin-local
  labels:
    kubernetes.io/service-name: wsorigin
addressType: IPv4
ports:
  - {{name: ws, port: {wsorigin}}}
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {{ready: true}}
---
apiVersion: v1
kind: Service
metadata:
  name: h2up
spec:
  ports:
    - {{name: h2c, port: 80, targetPort: {h2up}, appProtocol: kubernetes.io/h2c}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: h2up-local
  labels:
    kubernetes.io/service-name: h2up
addressType: IPv4
ports:
  - {{name: h2c, port: {h2up}}}
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {{ready: true}}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata:
  name: bench-h2up
spec:
  rules:
    - matches:
        - path: {{type: Prefix, value: /h2up}}
      backends:
        - {{service: h2up, port: 80}}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata:
  name: bench-tls
spec:
  hosts: [localhost]
  tls:
    secretRef: {{name: bench-tls}}
  rules:
    - matches:
        - path: {{type: Prefix, value: /ws}}
      backends:
        - {{service: wsorigin, port: 80}}
    - backends:
        - {{service: upstream, port: 80}}
"""


def make_cert():
    crt, key = os.path.join(b.TMP, "tls.crt"), os.path.join(b.TMP, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return crt, key


def indent(path):
    with open(path) as f:
        return "".join("    " + line for line in f)


# --- a WebSocket echo origin and a round-trip client (RFC 6455, just what the bench needs) ---

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def _echo(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            h = await reader.readexactly(2)
            n = h[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            mask = await reader.readexactly(4) if h[1] & 0x80 else b"\0\0\0\0"
            data = bytearray(await reader.readexactly(n))
            for i in range(n):
                data[i] ^= mask[i % 4]
            if h[0] & 0x0F == 8:
                break
            writer.write(bytes([h[0], n]) + bytes(data) if n < 126 else
                         bytes([h[0], 126]) + struct.pack("!H", n) + bytes(data))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
        pass
    finally:
        writer.close()


def ws_origin_main(port):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", port)
        async with server:
            await server.serve_forever()
    asyncio.run(main())


def ws_round_trips(port, count, path="/ws"):
    """Round-trip times (µs) of `count` 64-byte masked text frames on one connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError(f"ws: connection closed during the handshake on port {port}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"ws: handshake on port {port} answered {head.splitlines()[0]!r}")
    payload = b"x" * 64
    frame = bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload  # zero mask: payload as is
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        s.sendall(frame)
        got = b""
        while len(got) < 2 + len(payload):
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("ws: connection closed")
            got += chunk
        times.append((time.perf_counter() - t0) * 1e6)
    s.sendall(bytes([0x88, 0x80]) + b"\0\0\0\0")
    s.close()
    return times


def run(up_port, rounds, duration, warmup, conns, row, fmt, ratio_text, interleave, peers=("nginx",)):
    crt, key = make_cert()
    wsorigin = b.free_port()
    # The origin runs in a child process pinned on the load CPU, started through benchlib so
    # it is stopped by pid.
    b.start(["taskset", "-c", b.LOAD_CPU, sys.executable, os.path.abspath(__file__), "ws-origin", str(wsorigin)],
            "ws-origin")
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", wsorigin), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("bench: the WebSocket origin did not start")
            time.sleep(0.05)

    h2up, h2up_plain = b.free_port(), b.free_port()
    b.start_nginx("upstream-h2c", NGINX_H2C_UPSTREAM_CONF.format(tmp=b.TMP, port=h2up_plain, h2port=h2up),
                  b.LOAD_CPU, h2up_plain)
    cfg = os.path.join(b.TMP, "weir-tls-config")
    b.write_weir_config(cfg, up_port, 0, 1)
    with open(os.path.join(cfg, "10-tls.yaml"), "w") as f:
        f.write(WEIR_TLS_YAML.format(crt=indent(crt), key=indent(key), wsorigin=wsorigin, h2up=h2up))
    port, https, admin = b.free_port(), b.free_port(), b.free_port()
    weir = b.start_weir("weir-tls", cfg, port, admin, extra=("--https-addr", f"127.0.0.1:{https}"))
    ng_port, ng_ws = b.free_port(), b.free_port()
    ng = b.start_nginx("nginx-tls", NGINX_TLS_CONF.format(tmp=b.TMP, port=ng_port, wsport=ng_ws, upstream=up_port,
                                                          wsorigin=wsorigin),
                       b.PROXY_CPU, ng_ws)
    # weir's HTTPS port is bound once the TLS Route is live: wait for it.
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", https), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("bench: weir's HTTPS listener did not come up")
            time.sleep(0.05)
    targets = {"weir": ([weir.pid], https, port), "nginx": (b.proc_tree(ng.pid), ng_port, ng_ws)}
    if "caddy" in peers:
        # The same certificate, TLS 1.2/1.3 with h1 and h2 (ALPN), upstream keep-alive.
        cd_port = b.free_port()
        cd = b.start_caddy("caddy-tls", up_port, cd_port, tls=(crt, key))
        targets["caddy"] = ([cd.pid], cd_port, None)
    tls_targets = list(targets)

    def h1(name):
        pids, p, _ = targets[name]
        return b.measure(lambda: pids, lambda s, warm: b.parse_wrk(
            b.wrk(p, s or duration, conns, url=f"https://localhost:{p}/")), warmup)

    def h2(name):
        pids, p, _ = targets[name]
        return b.measure(lambda: pids, lambda s, warm: b.parse_h2load(
            b.h2load(p, s or duration, conns, 10, url=f"https://localhost:{p}/")), warmup)

    def handshakes(name):
        pids, p, _ = targets[name]
        res = b.measure(lambda: pids, lambda s, warm: b.parse_wrk(
            b.wrk(p, s or duration, conns, url=f"https://localhost:{p}/",
                  headers=["Connection: close"])), warmup)
        res["cpu_us_per_conn"] = res["cpu_us_per_req"]
        res["conn_per_cpu_s"] = 1e6 / res["cpu_us_per_req"] if res["cpu_us_per_req"] else 0.0
        return res

    def figures(results, rows):
        for peer in [t for t in results if t != "weir"]:
            for label, k, unit, target, ok in rows:
                w = [x[k] for x in results["weir"]]
                p = [x[k] for x in results[peer]]
                med, txt = ratio_text(w, p)
                holds = "-" if ok is None else ("yes" if ok(med) else "no")
                row(label, fmt(statistics.median(w), unit), peer, fmt(statistics.median(p), unit), txt, target, holds)

    res = interleave(tls_targets, h1, rounds, "tls h1")
    figures(res, [("cpu/request (TLS 1.3, h1 keep-alive)", "cpu_us_per_req", "us", "<= 0.9x", lambda x: x <= 0.9),
                  ("requests/s (TLS 1.3, h1, wrk)", "rps", "rps", "-", None)])
    res = interleave(tls_targets, h2, max(1, rounds // 2 + 1), "tls h2")
    figures(res, [("cpu/request (TLS 1.3, h2, h2load -m10)", "cpu_us_per_req", "us", "<= 0.9x", lambda x: x <= 0.9),
                  ("requests/s (TLS 1.3, h2)", "rps", "rps", "-", None)])
    res = interleave(tls_targets, handshakes, max(1, rounds // 2 + 1), "tls handshakes")
    figures(res, [("new TLS handshakes/s per core (conn: close)", "conn_per_cpu_s", "rps", ">= 1.0x",
                   lambda x: x >= 1.0),
                  ("cpu per new TLS connection + request", "cpu_us_per_conn", "us", "-", None)])

    # HTTP/2 (h2c) upstream vs HTTP/1.1 upstream, same weir, same client (h2c, -m10).
    def upstream_path(path):
        def run_one(_name):
            return b.measure(lambda: [weir.pid], lambda s, warm: b.parse_h2load(
                b.h2load(port, s or duration, conns, 10, url=f"http://127.0.0.1:{port}{path}")), warmup)
        return run_one
    paths = {"h1 upstream": "/h1up", "h2c upstream": "/h2up"}
    res = {}
    for r in range(max(1, rounds // 2 + 1)):
        for label, path in paths.items():
            x = upstream_path(path)(label)
            if x["errors"]:
                sys.exit(f"bench: {x['errors']} errors on {path}")
            res.setdefault(label, []).append(x)
            b.log(f"h2c round {r + 1} {label}: cpu/request {x['cpu_us_per_req']:.1f}us, rps {x['rps']:,.0f}")
    med, txt = ratio_text([x["cpu_us_per_req"] for x in res["h2c upstream"]],
                          [x["cpu_us_per_req"] for x in res["h1 upstream"]])
    row("cpu/request, h2c client -> h2c upstream (gRPC path)",
        fmt(statistics.median(x["cpu_us_per_req"] for x in res["h2c upstream"]), "us"), "h1 upstream",
        fmt(statistics.median(x["cpu_us_per_req"] for x in res["h1 upstream"]), "us"), txt)

    # WebSocket: round trips on one connection, direct vs weir (plain listener) vs nginx.
    count = 2000 if rounds >= 5 else 500
    ws_targets = {"direct": wsorigin, "weir": port, "nginx": ng_ws}
    medians = {n: [] for n in ws_targets}
    for r in range(max(1, rounds // 2 + 1)):
        for name, p in ws_targets.items():
            ws_round_trips(p, 50)  # warm-up
            t = ws_round_trips(p, count)
            medians[name].append(statistics.median(t))
            b.log(f"ws round {r + 1} {name}: p50 {medians[name][-1]:.1f}us")
    added = {n: [m - d for m, d in zip(medians[n], medians["direct"])] for n in ("weir", "nginx")}
    med, txt = ratio_text(added["weir"], added["nginx"])
    row("WebSocket echo round trip added over direct", fmt(statistics.median(added["weir"]), "us"), "nginx",
        fmt(statistics.median(added["nginx"]), "us"), txt, "<= 1.2x", "yes" if med <= 1.2 else "no")
    b.stop(weir)
    b.stop(ng)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "ws-origin":
    ws_origin_main(int(sys.argv[2]))
