# moe-train: two commands do everything on a fresh Debian machine.
#   make run    install what is missing, build (release), train the default config
#   make test   install what is missing, build once, run every test
SHELL := /bin/bash

# Ranks are processes: one BLAS thread each. Open MPI needs these to run as root (CI does)
# and to place more ranks than cores.
export OPENBLAS_NUM_THREADS := 1
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
# When one rank fails, Open MPI stops the others with SIGTERM and waits 1 s before SIGKILL.
# Ranks have nothing to flush (every file is written under a temporary name, then renamed),
# so the wait only delays the exit status: a rejected 2-rank job took 2.1 s, now 0.1 s.
export OMPI_MCA_odls_base_sigkill_timeout := 0

CONFIG ?= configs/default.json
# `make run`: 16 ranks, 4-way tensor parallel x 4 pipeline stages, 1F1B.
NP ?= 16
LAYOUT ?= --tp 4 --pp 4
ARGS ?=
PREFIX ?= /usr/local
BIN := .build/release/moe-train

.PHONY: all deps build run test compare bench install comm-check clean

all: build

deps:
	@launch/install-deps.sh

build: deps
	swift build -c release --product moe-train

run: build
	launch/run.sh -np $(NP) -- --config $(CONFIG) $(LAYOUT) $(ARGS)

# Unit and integration tests, built once in release mode (debug Swift is 10-50x slower in
# numeric loops); integration tests run the release binary under real mpirun, serialized.
# --disable-testable-imports: the tests use public API only, so the libraries built for the
# binary are reused as they are (with testable imports every module is compiled twice).
test: build
	@launch/install-deps.sh --with-python
	MOE_TRAIN_BIN=$(abspath $(BIN)) swift test -c release --disable-testable-imports --no-parallel --disable-swift-testing

# GPipe, 1F1B, interleaved and ZB-H1 on the default config and the 16-rank layout: a table,
# compare.json, a Chrome trace and an SVG timeline per schedule under $(COMPARE_OUT).
COMPARE_OUT ?= runs/compare
compare: build
	launch/run.sh -np $(NP) -- compare-schedules --config $(CONFIG) $(LAYOUT) --out $(COMPARE_OUT) $(ARGS)

# Measurements against this machine's limits (not tests): one table, and $(BENCH_JSON).
BENCH_JSON ?= bench.json
bench: build
	@launch/install-deps.sh --with-valgrind
	@mkdir -p .build/bench
	mpicc -O2 -o .build/bench/bench_mpi launch/bench_mpi.c
	launch/bench.sh $(BENCH_JSON)

comm-check: build
	launch/run.sh -np 4 -- comm-check --tp 2

# `make install PREFIX=P` builds, then copies the binary to P/bin and configs/ (default,
# tiny, the account, devices/) to P/share/moe-train, where the binary finds them from any
# directory. `make install PREFIX=P BIN=path` installs an already-built binary, no build.
install: $(if $(filter command line,$(origin BIN)),,build)
	install -d $(PREFIX)/bin $(PREFIX)/share/moe-train/devices $(PREFIX)/share/moe-train/published
	install -m 755 $(BIN) $(PREFIX)/bin/moe-train
	install -m 644 configs/*.json $(PREFIX)/share/moe-train/
	install -m 644 configs/devices/*.json $(PREFIX)/share/moe-train/devices/
	install -m 644 configs/published/*.json $(PREFIX)/share/moe-train/published/
	@echo "installed $(PREFIX)/bin/moe-train; for mpirun as root or with more ranks than cores: source launch/env.sh"

clean:
	rm -rf .build
