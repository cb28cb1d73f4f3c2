"""The `plugins` figure group of bench/bench.py: weir's CPU per request with plugins, as a
ratio to the same weir's no-plugin route, measured in the same round.

One weir process (one worker, CPU 0) serves five Routes on the same upstream:

  /none    no plugins                                       (a, the reference)
  /jwt     jwt RS256, JWKS in a Secret                       (b)
  /rl      rateLimit store Local, a limit never reached      (c)
  /jwtrl   jwt RS256 + local rateLimit                       (d, target <= 1.1x (a))
  /redis   rateLimit store Redis (a redis-server on CPU 1)   (e)
  /edge    cors + requestHeaders + responseHeaders + jwt + local rateLimit, every request
           with an allowed `Origin` (f, target <= 1.15x (a); <= 1.25x once metrics and
           access logs are on)
  /gzip    compression (gzip, minLength 1), every request with `Accept-Encoding: gzip`: the
           cost of one encoder per response on the upstream's 3-byte body (g, no target)
  /extauth extAuth asking the upstream nginx (`200`) over a pooled keep-alive connection:
           one extra upstream exchange per request (h, no target)

The RSA key is made with the `openssl` CLI in the bench's temp dir and one token is signed
with `openssl dgst` once; wrk sends that same `Authorization` header on every request, so
after the first request the verification is a cache hit (what a hot client costs). Every
rateLimit uses `key: ClientIP` (all wrk connections are one client) with a limit so high it
never refuses; a 429 or any non-2xx counts as an error. Rounds are interleaved
(a, b, c, d, e, a, b, …) and each ratio is taken against (a) of the same round.
"""

import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request

import benchlib as b

# Never reached at bench rates, and (limit x window ms) far below the 2^53 bound.
LIMIT = 100_000_000
VARIANTS = [
    ("none", "no plugins", []),
    ("jwt", "jwt RS256, cached verification", ["bench-jwt"]),
    ("rl", "rateLimit Local", ["bench-rl-local"]),
    ("jwtrl", "jwt RS256 (cached) + rateLimit Local", ["bench-jwt", "bench-rl-local-2"]),
    ("redis", "rateLimit Redis", ["bench-rl-redis"]),
    ("edge", "cors + request/response headers + jwt (cached) + rateLimit Local",
     ["bench-cors", "bench-req-headers", "bench-resp-headers", "bench-jwt", "bench-rl-local-3"]),
    ("gzip", "compression gzip (3-byte body, minLength 1)", ["bench-gzip"]),
    ("extauth", "extAuth to a keep-alive auth service", ["bench-extauth"]),
]
# The ratio to /none each variant must hold (BENCHMARKING.md).
TARGETS = {"jwtrl": 1.1, "edge": 1.15}
ORIGIN = "https://app.bench"


def request_headers(plugins, token):
    """The headers wrk sends on a variant's route: the token for jwt, an allowed Origin for cors."""
    out = []
    if "bench-jwt" in plugins:
        out.append(f"Authorization: Bearer {token}")
    if "bench-cors" in plugins:
        out.append(f"Origin: {ORIGIN}")
    if "bench-gzip" in plugins:
        out.append("Accept-Encoding: gzip")
    return out


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(args, stdin=None):
    return subprocess.run(["openssl"] + args, input=stdin, capture_output=True, check=True, timeout=120).stdout


def make_key_and_token(tmp):
    """An RSA key (openssl genpkey), its JWKS and one RS256 token signed by openssl."""
    key = os.path.join(tmp, "idp.pem")
    openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key])
    modulus = openssl(["rsa", "-in", key, "-noout", "-modulus"]).decode().strip().split("=", 1)[1]
    jwks = {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "e": "AQAB",
                      "n": b64u(bytes.fromhex(modulus))}]}
    header = b64u(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
    claims = {"iss": "https://idp.bench", "sub": "bench", "exp": int(time.time()) + 86400}
    payload = b64u(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = b64u(openssl(["dgst", "-sha256", "-sign", key, "-binary"], stdin=signing_input))
    return jwks, f"{header}.{payload}.{sig}"


def config_text(jwks, redis, upstream):
    docs = [f"""apiVersion: v1
kind: Secret
metadata: {{name: bench-jwks}}
stringData:
  jwks.json: '{json.dumps(jwks)}'
""", """apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: bench-jwt}
spec:
  jwt: {algorithms: [RS256], issuer: "https://idp.bench", jwksSecretRef: {name: bench-jwks}}
"""]
    docs.append(f"""apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {{name: bench-cors}}
spec:
  cors: {{allowOrigins: ["{ORIGIN}"], allowMethods: [GET, POST], allowHeaders: [authorization], allowCredentials: true, maxAge: 10m}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {{name: bench-req-headers}}
spec:
  requestHeaders: {{set: [{{name: X-Gateway, value: weir}}, {{name: X-Route, value: "${{route}}"}}], remove: [x-debug]}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {{name: bench-resp-headers}}
spec:
  responseHeaders: {{set: [{{name: X-Served-By, value: weir}}], remove: [server]}}
""")
    docs.append(f"""apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {{name: bench-gzip}}
spec:
  compression: {{types: [Gzip], minLength: 1, contentTypes: [text/*]}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {{name: bench-extauth}}
spec:
  extAuth: {{url: "http://127.0.0.1:{upstream}/check", timeout: 5s}}
""")
    stores = [("bench-rl-local", "Local"), ("bench-rl-local-2", "Local"), ("bench-rl-local-3", "Local")] + ([("bench-rl-redis", "Redis")] if redis else [])
    for name, store in stores:
        docs.append(f"""apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {{name: {name}}}
spec:
  rateLimit: {{limit: {LIMIT}, window: 1s, key: ClientIP, store: {store}}}
""")
    for path, _, plugins in VARIANTS:
        if path == "redis" and not redis:
            continue
        docs.append(f"""apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {{name: bench-{path}}}
spec:
  plugins: [{", ".join(plugins)}]
  rules:
    - matches: [{{path: {{type: Prefix, value: /{path}}}}}]
      backends: [{{service: upstream, port: 80}}]
""")
    return "---\n".join(docs)


def start_redis():
    """A redis-server on a free loopback port (CPU 1, no persistence), or None if missing."""
    if shutil.which("redis-server") is None:
        b.log("redis-server not found: skipping the Redis rateLimit figure (apt-get install -y redis-server)")
        return None, None
    port = b.free_port()
    p = b.start(["taskset", "-c", b.LOAD_CPU, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", b.TMP], "redis")
    deadline = time.time() + 20
    while time.time() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"bench: redis-server exited with {p.returncode} (logs in {b.TMP})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return p, port
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: redis-server not ready on port {port} within 20s")


def redis_commands(port):
    """`total_commands_processed` of the redis-server: proves the Redis route used it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO stats\r\n")
        data, deadline = b"", time.time() + 5
        while b"total_commands_processed:" not in data or not data.endswith(b"\r\n"):
            if time.time() > deadline:
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":", 1)[1])
    return 0


def store_errors(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode(errors="replace")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("weir_ratelimit_store_errors_total"))


def run(up_port, rounds, duration, warmup, conns, row, fmt, ratio_text, interleave):
    """Starts its weir (and redis-server), measures, adds the rows, stops both by pid."""
    if shutil.which("openssl") is None:
        b.log("openssl not found: skipping the plugin figures (apt-get install -y openssl)")
        return
    tmp = os.path.join(b.TMP, "plugins")
    os.makedirs(tmp, exist_ok=True)
    jwks, token = make_key_and_token(tmp)
    redis, redis_port = start_redis()
    cfg = os.path.join(tmp, "config")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "00-backend.yaml"), "w") as f:
        f.write(b.BACKEND_YAML.format(upstream=up_port))
    with open(os.path.join(cfg, "10-plugins.yaml"), "w") as f:
        f.write(config_text(jwks, redis is not None, up_port))
    port, admin = b.free_port(), b.free_port()
    extra = ["--redis-url", f"redis://127.0.0.1:{redis_port}", "--redis-timeout", "1s"] if redis else []
    weir = b.start_weir("weir-plugins", cfg, port, admin, ready_path="/none", extra=extra)
    variants = [v for v in VARIANTS if v[0] != "redis" or redis is not None]
    headers = {path: request_headers(plugins, token) for path, _, plugins in variants}
    # Each route answers 200 with its plugins before any figure (a 401 or 429 would be measured
    # as cheap), and the jwt routes really check: without the token they answer 401.
    for path, _, plugins in variants:
        if "bench-jwt" in plugins:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}/x", timeout=5)
                raise SystemExit(f"bench: /{path} answered without a token")
            except urllib.error.HTTPError as e:
                if e.code != 401:
                    raise SystemExit(f"bench: /{path} without a token answered {e.code}, not 401") from e
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{path}/x",
                                     headers=dict(h.split(": ", 1) for h in headers[path]))
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status != 200:
                raise SystemExit(f"bench: /{path} answered {r.status}")
            # The edge route's plugins really run (else it would be measured as cheap).
            if "bench-cors" in plugins and r.headers.get("access-control-allow-origin") != ORIGIN:
                raise SystemExit(f"bench: /{path} answered without its CORS headers")
            if "bench-resp-headers" in plugins and r.headers.get("x-served-by") != "weir":
                raise SystemExit(f"bench: /{path} answered without its response headers")
            if "bench-gzip" in plugins and r.headers.get("content-encoding") != "gzip":
                raise SystemExit(f"bench: /{path} answered uncompressed")
    errors_before = store_errors(admin) if redis else 0

    redis_cmds = [0, 0]  # Redis commands and requests over the measured Redis-route runs

    def run_one(path):
        def go(seconds, warm):
            counted = path == "redis" and not warm
            before = redis_commands(redis_port) if counted else 0
            out = b.parse_wrk(b.wrk(port, seconds or duration, conns, path=f"/{path}/x", headers=headers[path]))
            if counted:
                redis_cmds[0] += redis_commands(redis_port) - before
                redis_cmds[1] += out["requests"]
            return out
        return b.measure(lambda: [weir.pid], go, warmup)
    res = interleave([v[0] for v in variants], run_one, rounds, "plugins")
    base = [x["cpu_us_per_req"] for x in res["none"]]
    for path, label, _ in variants:
        w = [x["cpu_us_per_req"] for x in res[path]]
        med, rtxt = ratio_text(w, base) if path != "none" else (1.0, "1.00x")
        target = f"<= {TARGETS[path]}x" if path in TARGETS else "-"
        holds = ("yes" if med <= TARGETS[path] else "no") if path in TARGETS else "-"
        row(f"cpu/request, {label}", fmt(statistics.median(w), "us"), "no plugins",
            fmt(statistics.median(base), "us"), rtxt, target, holds)
        row(f"  requests/s, {label}", fmt(statistics.median(x["rps"] for x in res[path]), "rps"))
    errs = {p: sum(x["errors"] for x in xs) for p, xs in res.items()}
    b.log(f"plugins errors (non-2xx incl. 401/429, socket errors): {errs}")
    if any(errs.values()):
        row("plugin routes: non-2xx or socket errors", str(sum(errs.values())), "", "", str(errs), "0", "no")
    if redis:
        store = store_errors(admin) - errors_before
        row("  Redis store errors (fail-open decisions)", f"{store:.0f}", "", "", "", "0", "yes" if store == 0 else "no")
        row("  Redis commands (Lua calls included) / request", f"{redis_cmds[0] / max(1, redis_cmds[1]):.2f}")
    b.stop(weir)
    if redis:
        b.stop(redis)
