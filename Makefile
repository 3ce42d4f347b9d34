# faultline: everything builds in release mode. Simulations of SQLite under madsim are an order
# of magnitude slower unoptimised, so one optimised build serves runs and tests alike.
CARGO    ?= cargo
BIN      := target/release/faultline
SCENARIO ?= scenarios/kine-compaction-failure.toml
SEED     ?= 1
SEEDS    ?= 1..200
DESIGN   ?=
DESIGN_FLAG := $(if $(DESIGN),--design $(DESIGN),)

.PHONY: build run test fuzz repro determinism validate bench list lint

build:
	$(CARGO) build --release --bin faultline

## The flagship scenario on a fixed seed, with its summary.
run: build
	$(BIN) run scenarios/kine-compaction-failure.toml --seed 1

## Every test: unit tests, checker tests both ways, CLI and determinism tests.
test:
	$(CARGO) test --workspace --release

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
	$(BIN) bench --seeds 1..5
	$(BIN) bench --checker linearizable --ops 1000000

list: build
	$(BIN) list

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
