# faultline: everything builds optimised. Simulations of SQLite under madsim are an order of
# magnitude slower unoptimised. Tests use the release profile; the binary that runs scenarios and
# campaigns (BIN) uses the campaign profile: release plus fat LTO, slower to build, faster to run
# (Cargo.toml says by how much).
CARGO    ?= cargo
BIN      := target/campaign/faultline
SCENARIO ?= scenarios/kine-compaction-failure.toml
SEED     ?= 1
SEEDS    ?= 1..200
DESIGN   ?=
DESIGN_FLAG := $(if $(DESIGN),--design $(DESIGN),)

# The real build (faultline-store): the same src/ without --cfg madsim, in its own target folder
# so the simulator's build stays what it is. An explicit RUSTFLAGS, even empty, overrides the
# `--cfg madsim` of .cargo/config.toml.
REAL_CARGO := RUSTFLAGS= $(CARGO)
REAL_FLAGS := --release --target-dir target/real -p faultline-real --features real
REAL_BIN   := target/real/release
LISTEN     ?= 127.0.0.1:2379
DB         ?= results/serve/store.db
# The conformance suite's seeds: `make conformance` (about 5 minutes here: lease expiries wait out their TTL) and in `make test`.
CONFORMANCE_SEEDS      ?= 1..200
TEST_CONFORMANCE_SEEDS ?= 1..20

.PHONY: live build run test test-real fuzz repro determinism validate bench bench-probes bench-serve list lint \
	real-build serve conformance

build:
	$(CARGO) build --profile campaign --bin faultline

## The flagship scenario on a fixed seed, with its summary.
run: build
	$(BIN) run scenarios/kine-compaction-failure.toml --seed 1

## Every test: unit tests, checker tests both ways, CLI, campaign and determinism tests, the
## deployment files against their validators (from PyPI; said loudly when they are missing), then
## the real build's tests.
test:
	@for v in kubernetes-validate check-jsonschema zizmor; do \
	  command -v $$v >/dev/null 2>&1 || echo "*** NOT RUN: deployment validation needs $$v (pip install kubernetes-validate check-jsonschema zizmor) ***"; \
	done
	$(CARGO) test --workspace --release
	@$(MAKE) --no-print-directory test-real

## The real build's tests: faultline-store served for real and the suite's own unit tests; then,
## with etcd 3.4 installed, etcdctl against faultline-store and TEST_CONFORMANCE_SEEDS of the
## conformance suite, and TLS with etcdctl; with Node.js and the npm etcd3 package too, that
## client's features against etcd and faultline-store. What cannot run says so loudly and fails,
## unless SKIP_ETCD=1 (or SKIP_CLIENTS=1 for the npm client) says to accept that.
test-real:
	$(REAL_CARGO) test $(REAL_FLAGS) --lib --bins --test serve --test live_runs
	@if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then \
		echo "FAULTLINE_CONFORMANCE_SEEDS=$(TEST_CONFORMANCE_SEEDS) $(REAL_CARGO) test $(REAL_FLAGS) --test etcdctl --test tls --test conformance --test live_targets --test live_faults"; \
		FAULTLINE_CONFORMANCE_SEEDS=$(TEST_CONFORMANCE_SEEDS) $(REAL_CARGO) test $(REAL_FLAGS) --test etcdctl --test tls --test conformance --test live_targets --test live_faults; \
	else \
		echo; \
		echo "************************************************************************"; \
		echo "** etcd 3.4 NOT FOUND: the etcdctl test and the conformance suite were"; \
		echo "** NOT RUN. Install Debian's etcd-server and etcd-client:"; \
		echo "**     sudo apt-get install etcd-server etcd-client    (bash .ci/run does)"; \
		echo "** or accept that they did not run: make test SKIP_ETCD=1"; \
		echo "************************************************************************"; \
		test "$(SKIP_ETCD)" = 1; \
	fi
	@if command -v etcd >/dev/null 2>&1 && command -v node >/dev/null 2>&1 && \
	    test -f real/clients/etcd3/node_modules/etcd3/package.json; then \
		echo "$(REAL_CARGO) test $(REAL_FLAGS) --test etcd3_client"; \
		$(REAL_CARGO) test $(REAL_FLAGS) --test etcd3_client; \
	else \
		echo; \
		echo "************************************************************************"; \
		echo "** the npm etcd3 client test was NOT RUN: it needs etcd 3.4, Node.js and"; \
		echo "** the package: npm ci --prefix real/clients/etcd3   (bash .ci/run does)"; \
		echo "** or accept that it did not run: make test SKIP_CLIENTS=1"; \
		echo "************************************************************************"; \
		test "$(SKIP_CLIENTS)" = 1; \
	fi

## faultline's etcd MVCC and faultline-store against real etcd 3.4, operation by operation:
## make conformance [CONFORMANCE_SEEDS=1..200]
conformance: real-build
	$(REAL_BIN)/faultline-conformance --seeds $(CONFORMANCE_SEEDS)

real-build:
	$(REAL_CARGO) build $(REAL_FLAGS)

## Live mode's first run: 2 minutes of the live scenario's workload against a real 3-member etcd
## 3.4 cluster (Debian's etcd-server) under kills, pauses and partitions, judged by the
## simulator's checkers; summary printed, report under results/live/etcd-3/seed-$(SEED)/.
## make live [LIVE_TARGET=targets/faultline-store.toml] [SEED=2] [LIVE_FLAGS='--runs 20']
LIVE_TARGET ?= targets/etcd-3.toml
live: real-build
	$(REAL_BIN)/faultline-live scenarios/live/etcd.toml --target $(LIVE_TARGET) --seed $(SEED) $(LIVE_FLAGS)

## The store served for real until Ctrl-C: make serve [LISTEN=127.0.0.1:2379] [DB=results/serve/store.db]
## (DB=:memory: keeps nothing; SERVE_FLAGS='--compact-interval-s 60' and so on).
serve: real-build
	@mkdir -p $(dir $(DB))
	$(REAL_BIN)/faultline-store serve --listen $(LISTEN) --db $(DB) $(SERVE_FLAGS)

## Every scenario over SEEDS (default 1..200); reports in results/fuzz-*/summary.json.
fuzz: build
	$(BIN) fuzz scenarios/*.toml --seeds $(SEEDS) $(DESIGN_FLAG)

## Replay one seed with its full trace: make repro SCENARIO=... SEED=... [DESIGN=area=variant]
repro: build
	$(BIN) repro $(SCENARIO) --seed $(SEED) $(DESIGN_FLAG)

## Each seed twice in separate processes; trace hashes must match.
determinism: build
	$(BIN) determinism $(SCENARIO) --seeds 1..20

## Fixed design and every variant on its targeted scenario: results/validation.md and .json.
validate: build
	$(BIN) validate --seeds 1..20

## Simulated seconds per wall second, seeds per minute and peak memory, one core; then the
## linearizable checker over a generated 1,000,000-operation history.
bench: build
	$(BIN) bench --seeds 1..5 $(if $(BASELINE),--baseline $(BASELINE),)
	$(BIN) bench --checker linearizable --ops 1000000

## What code probes cost: the same source built with every probe mark compiled out
## (`--cfg faultline_no_probes`, its own target folder) as the baseline, side by side.
NOPROBES_BIN := target/noprobes/campaign/faultline
bench-probes: build
	RUSTFLAGS="--cfg madsim --cfg faultline_no_probes" $(CARGO) build --profile campaign \
	  --target-dir target/noprobes --bin faultline
	$(BIN) bench --seeds $(or $(BENCH_SEEDS),1..5) --no-profile --out results/bench-probes \
	  --baseline $(NOPROBES_BIN)

## The same concurrent put/get load (32 clients) against etcd 3.4 and faultline-store over a
## SQLite file, side by side in one run: requests per second, p50/p99 latency;
## results/bench-serve.json. BENCH_SERVE_FLAGS='--rounds 3 --seconds 20' and so on.
bench-serve: real-build
	$(REAL_BIN)/faultline-serve-bench $(BENCH_SERVE_FLAGS)

list: build
	$(BIN) list

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(REAL_CARGO) clippy --release --target-dir target/real -p faultline-store -p faultline-real \
		--features faultline-real/real --all-targets -- -D warnings
