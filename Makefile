# weir — developer entry points. `make run` and `make test` are the two a newcomer needs.

CARGO ?= cargo
HTTP_ADDR ?= 127.0.0.1:8080
HTTPS_ADDR ?= 127.0.0.1:8443
ADMIN_ADDR ?= 127.0.0.1:9901
QUICKSTART ?= deploy/examples/quickstart
# The demo backends the quickstart's EndpointSlices point at.
DEMO_BACKENDS ?= orders-v1=127.0.0.1:9001 orders-v2=127.0.0.1:9002 users-v1=127.0.0.1:9003 flaky=127.0.0.1:9004 inventory-a=127.0.0.1:9005 inventory-b=127.0.0.1:9006
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: help run build test crds bench lint chart fuzz

help:
	@echo "make run    - build, start demo backends and weir on $(QUICKSTART) (http $(HTTP_ADDR), https $(HTTPS_ADDR), admin $(ADMIN_ADDR))"
	@echo "make test   - build every binary, run every test, then check the Helm chart (make chart CHECK=1)"
	@echo "make crds   - regenerate charts/weir/crds/ from the Rust types (weir crds)"
	@echo "make bench  - weir vs nginx/haproxy/caddy on loopback, all figures (bench/bench.py; QUICK=1 ~3 min); cargo bench -p weir-dataplane for micro"
	@echo "make lint   - cargo fmt --check and clippy -D warnings"
	@echo "make chart  - lint, render and check charts/weir with the Helm engine; write deploy/install.yaml"
	@echo "make fuzz   - build the cargo-fuzz targets in fuzz/ and run each for FUZZ_TIME seconds (default 20)"

build:
	$(CARGO) build -p weir-controller -p weir-e2e --bins

# Starts the demo backends in the background, weir in the foreground; the backends are
# stopped (by pid) when weir exits or on Ctrl-C. HTTPS: a self-signed certificate for
# localhost is generated once into $(QUICKSTART)/quickstart-tls.local.yaml (a Secret,
# gitignored, openssl CLI) and the HTTPS Route deploy/examples/https/route.yaml is copied
# next to it as https.local.yaml (kept out of the quickstart directory itself so that
# validating it needs no generated Secret).
run: build
	@test -f $(QUICKSTART)/quickstart-tls.local.yaml || scripts/quickstart-tls.sh $(QUICKSTART)/quickstart-tls.local.yaml
	@cp deploy/examples/https/route.yaml $(QUICKSTART)/https.local.yaml
	@set -eu; \
	$(TARGET_DIR)/debug/weir-demo-backend $(DEMO_BACKENDS) & \
	backends=$$!; \
	trap 'kill $$backends 2>/dev/null || true; wait $$backends 2>/dev/null || true' EXIT INT TERM; \
	echo "weir: proxy on http://$(HTTP_ADDR) and https://$(HTTPS_ADDR), admin on http://$(ADMIN_ADDR), dashboard at http://$(ADMIN_ADDR)/; Ctrl-C to stop"; \
	$(TARGET_DIR)/debug/weir run --config-dir $(QUICKSTART) --http-addr $(HTTP_ADDR) --https-addr $(HTTPS_ADDR) --admin-addr $(ADMIN_ADDR)

# The e2e tests start target/debug/weir as a process, so the binaries are built first
# (with the same workspace feature set as the tests, so nothing is rebuilt twice).
# Then the chart: linted and rendered with Helm's engine, deploy/install.yaml checked in sync.
test:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace
	$(MAKE) --no-print-directory chart CHECK=1

crds:
	$(CARGO) run -q -p weir-controller --bin weir -- crds | scripts/split-crds.sh charts/weir/crds

# weir vs nginx, haproxy and caddy on loopback, see bench/bench.py and docs/performance.md.
# Needs: apt-get install -y nginx-light wrk haproxy caddy nghttp2-client redis-server openssl (the harness
# only checks; without redis-server the Redis rateLimit figure is skipped).
# About 9-11 minutes; `make bench QUICK=1` about 3-4. Knobs (environment or make variables):
# ROUNDS, DURATION, WARMUP, CONNECTIONS, PEERS, FIGURES, SCALE_NS, ROUTES_PER_FILE, CHANGES.
BENCH_VARS := QUICK ROUNDS DURATION WARMUP CONNECTIONS PEERS FIGURES SCALE_NS ROUTES_PER_FILE CHANGES LAT_LOAD LAT_RATE KEEP_TMP
bench:
	$(CARGO) build --release -p weir-controller -p weir-e2e --bins
	NO_BUILD=1 TARGET_DIR=$(TARGET_DIR) $(foreach v,$(BENCH_VARS),$(if $($(v)),$(v)='$($(v))')) python3 bench/bench.py

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Lints and renders charts/weir with Helm's own Go library (the helm-python-sdk package, no
# helm binary), checks the rendered objects (also against the Kubernetes 1.26 schema bundled
# by the kubernetes-validate package) and writes deploy/install.yaml.
# `make chart CHECK=1` fails instead if deploy/install.yaml is out of date (for CI).
HELM_PYTHON_SDK ?= helm-python-sdk==0.2.2
KUBERNETES_VALIDATE ?= kubernetes-validate==1.37.0
chart:
	@python3 -c 'import helm_python' 2>/dev/null || { \
	  echo "make chart: helm-python-sdk is not installed; installing $(HELM_PYTHON_SDK) with pip"; \
	  python3 -m pip install -q '$(HELM_PYTHON_SDK)'; }
	@python3 -c 'import kubernetes_validate' 2>/dev/null || { \
	  echo "make chart: kubernetes-validate is not installed; installing $(KUBERNETES_VALIDATE) with pip"; \
	  python3 -m pip install -q '$(KUBERNETES_VALIDATE)'; }
	@python3 -c 'import yaml' 2>/dev/null || { \
	  echo "make chart: PyYAML is not installed; installing it with pip"; \
	  python3 -m pip install -q PyYAML; }
	python3 scripts/chart.py $(if $(CHECK),--check)

# Fuzz targets (fuzz/, cargo-fuzz and libFuzzer): request normalization, host/path matching,
# SNI selection. Builds every target, then runs each for FUZZ_TIME seconds on fuzz/corpus/T
# (kept, gitignored) plus the committed seeds in fuzz/seeds/T. A failure leaves the input in
# fuzz/artifacts/T/; replay it with `cd fuzz && cargo fuzz run -s none T artifacts/T/crash-...`.
# `-s none`: no sanitizer, so stable Rust suffices (the code is safe Rust: `unsafe_code` is
# forbidden); coverage guidance and the targets' own assertions are what find bugs.
# FUZZ_BUILD=--dev builds unoptimised (faster to compile, slower to run; CI uses it).
FUZZ_TIME ?= 20
FUZZ_BUILD ?=
FUZZ_TARGETS := normalize route_match sni_select
CARGO_FUZZ_VERSION ?= 0.13.2
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || { \
	  echo "make fuzz: cargo-fuzz is not installed; installing cargo-fuzz $(CARGO_FUZZ_VERSION)"; \
	  $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked; }
	cd fuzz && $(CARGO) fuzz build -s none $(FUZZ_BUILD)
	@set -e; cd fuzz; log=$$(mktemp); trap 'rm -f "$$log"' EXIT; passed=0; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t; \
	  echo "make fuzz: $$t for $(FUZZ_TIME)s"; \
	  if $(CARGO) fuzz run -s none $(FUZZ_BUILD) $$t corpus/$$t $$(test -d seeds/$$t && echo seeds/$$t) -- \
	      -max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$$log" 2>&1; then \
	    grep -E '^(Done|stat::new_units_added)' "$$log" || true; passed=$$((passed + 1)); \
	  else \
	    tail -n 40 "$$log"; echo "make fuzz: $$t FAILED (the input is in fuzz/artifacts/$$t/)"; \
	    echo "fuzz: $$passed passed, 1 failed"; exit 1; \
	  fi; \
	done; echo "make fuzz: every target ran $(FUZZ_TIME)s without a failure"; \
	echo "fuzz: $$passed passed, 0 failed"
