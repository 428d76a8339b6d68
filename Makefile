# corral: `make demo` and `make test` work on a fresh machine (see README.md).
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: help
help:  ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# `mpi` comes first: pip builds mpi4py against Open MPI's headers (libopenmpi-dev).
$(VENV)/.deps: requirements-dev.txt | mpi
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

# CurveZMQ encryption (`--enable-curve`) needs libsodium when libzmq is built (see
# vendor/zmq-sys/CORRAL.md). Installed from Debian's packages when missing; without it
# corral still builds, and refuses `--enable-curve` with a message saying what to install.
.PHONY: sodium
sodium:  ## install libsodium-dev (for CurveZMQ) if this Debian/Ubuntu machine lacks it
	@if command -v dpkg >/dev/null 2>&1 && ! dpkg -s libsodium-dev >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  echo "installing libsodium-dev (CurveZMQ encryption)"; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q libsodium-dev \
	    || { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q libsodium-dev; } \
	    || echo "WARNING: could not install libsodium-dev: corral is built without CurveZMQ"; \
	fi

# The MPI launcher (`Cluster(engines='mpi')`) runs engines as the ranks of one `mpiexec`
# world; mpi4py (requirements-dev.txt) compiles against libopenmpi-dev, so this target runs
# before pip installs the requirements.
.PHONY: mpi
mpi:  ## install Open MPI (openmpi-bin, libopenmpi-dev) if this Debian/Ubuntu machine lacks it
	@if command -v dpkg >/dev/null 2>&1 && ! { dpkg -s openmpi-bin && dpkg -s libopenmpi-dev; } >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  echo "installing openmpi-bin and libopenmpi-dev (the MPI launcher, mpi4py)"; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q openmpi-bin libopenmpi-dev \
	    || { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q openmpi-bin libopenmpi-dev; } \
	    || echo "WARNING: could not install Open MPI: the MPI launcher and its tests cannot run"; \
	fi

.PHONY: install
install: $(VENV)/.deps sodium  ## create .venv with corral built in release mode and installed
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

.PHONY: build
build: sodium  ## build the Rust workspace (debug)
	cargo build

.PHONY: test
test: install  ## install, check format and clippy, then run the Rust tests and the pytest suite
	@if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory lint; \
	else echo "WARNING: rustfmt or clippy is not installed with this Rust toolchain: lint skipped"; fi
	cargo test
	$(VENV)/bin/pytest -q

.PHONY: lint
lint: $(VENV)/.deps  ## rustfmt and clippy on every crate, the PyO3 module included
	cargo fmt --all --check
	PYO3_PYTHON=$(abspath $(PY)) cargo clippy --workspace --all-targets -- -D warnings

.PHONY: demo
demo: install  ## start a local 4-engine cluster and run the data-publication flow
	$(PY) examples/demo.py

.PHONY: bench
bench: install  ## benchmark corral against stock ipyparallel (W1-W7)
	$(PY) benchmarks/run.py --impl both

.PHONY: ipp-suite
ipp-suite: install  ## run ipyparallel's own test suite in the four controller/engine pairings
	tests/ipyparallel_suite/run.sh stock ipp-suite-stock.log
	tests/ipyparallel_suite/run.sh corral ipp-suite-corral.log
	IPP_SUITE_ENGINES=corral tests/ipyparallel_suite/run.sh stock ipp-suite-stock-corral-engines.log
	IPP_SUITE_ENGINES=corral tests/ipyparallel_suite/run.sh corral ipp-suite-corral-corral-engines.log

.PHONY: clean
clean:  ## remove build output and the virtualenv
	cargo clean
	rm -rf $(VENV)
