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

# Debian packages that the build or the tests need, installed when missing (as root, or
# with passwordless sudo); if that fails, a warning says what will not work.
#   $(call debian_packages,<packages>,<what they are for>,<what fails without them>)
define debian_packages
	@if command -v dpkg >/dev/null 2>&1 && ! dpkg -s $(1) >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  APT="apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends"; \
	  echo "installing $(1) ($(2))"; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO $$APT $(1) \
	    || { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO $$APT $(1); } \
	    || echo "WARNING: could not install $(1): $(3)"; \
	fi
endef

# CurveZMQ encryption (`--enable-curve`) needs libsodium when libzmq is built (see
# vendor/zmq-sys/CORRAL.md). Without it corral still builds, and refuses `--enable-curve`
# with a message saying what to install.
.PHONY: sodium
sodium:  ## install libsodium-dev (for CurveZMQ) if this Debian/Ubuntu machine lacks it
	$(call debian_packages,libsodium-dev,CurveZMQ encryption,corral is built without CurveZMQ)

# Slurm for tests/cluster/test_slurm.py: a single-node Slurm (slurmctld + slurmd, munge for
# authentication) that tests/slurm.py configures and starts as the user running the tests.
.PHONY: slurm
slurm:  ## install Slurm (slurmctld, slurmd, client) and munge for the batch-launcher tests
	$(call debian_packages,slurmctld slurmd slurm-client munge,a single-node Slurm for the batch-launcher tests,tests/cluster/test_slurm.py will fail)

# The SSH tests (Client(sshserver=...) tunnels, the SSH engine launcher) run a real OpenSSH
# server on a loopback address, started by the tests as this user (tests/sshd.py).
.PHONY: openssh
openssh:  ## install openssh-server (sshd for the SSH tests) if this Debian/Ubuntu machine lacks it
	$(call debian_packages,openssh-server openssh-client,sshd for the SSH tests,the SSH tests will fail saying so)

# The MPI launcher (`Cluster(engines='mpi')`) runs engines as the ranks of one `mpiexec`
# world; mpi4py (requirements-dev.txt) compiles against libopenmpi-dev, so this target runs
# before pip installs the requirements. (Open MPI's mpiexec looks for ssh even on one host.)
.PHONY: mpi
mpi:  ## install Open MPI (openmpi-bin, libopenmpi-dev) if this Debian/Ubuntu machine lacks it
	$(call debian_packages,openmpi-bin libopenmpi-dev openssh-client,the MPI launcher and mpi4py,the MPI launcher and its tests cannot run)

# tests/cluster/test_watch.py drives `corral watch` in a real terminal: a tmux pane.
.PHONY: tmux
tmux:  ## install tmux (the terminal the `corral watch` tests drive) if this Debian/Ubuntu machine lacks it
	$(call debian_packages,tmux,the terminal the corral watch tests drive,tests/cluster/test_watch.py will fail saying so)

# The dashboard test (tests/cluster/test_dashboard.py) drives Debian's headless Chromium
# through Selenium and Debian's chromedriver (a test tool's own browser download fails
# without network).
.PHONY: chromium
chromium:  ## install chromium and chromium-driver (the dashboard's browser test) if missing
	$(call debian_packages,chromium chromium-driver,the dashboard's headless browser test,tests/cluster/test_dashboard.py will fail)

.PHONY: install
install: $(VENV)/.deps sodium slurm openssh tmux chromium  ## create .venv with corral built in release mode and installed
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
bench: install  ## benchmark corral against stock ipyparallel (W1-W10)
	$(PY) benchmarks/run.py --impl both

# W11: N engine processes at once (default 128; N=512 needs about 512 x 30 MB of memory).
.PHONY: bench-many
bench-many: install  ## many engines against stock ipyparallel: W11, N engines from CORRAL_BENCH_MANY_ENGINES (default 128)
	$(PY) benchmarks/run.py --impl both --workloads W11 --repeat 1

.PHONY: ipp-suite
ipp-suite: install  ## run ipyparallel's own test suite in the four controller/engine pairings
	tests/ipyparallel_suite/run.sh stock ipp-suite-stock.log
	tests/ipyparallel_suite/run.sh corral ipp-suite-corral.log
	IPP_SUITE_ENGINES=corral tests/ipyparallel_suite/run.sh stock ipp-suite-stock-corral-engines.log
	IPP_SUITE_ENGINES=corral tests/ipyparallel_suite/run.sh corral ipp-suite-corral-corral-engines.log

.PHONY: ipp-suite-client
ipp-suite-client: install  ## ipyparallel's own test suite with corral's client (all-corral, and with stock peers)
	IPP_SUITE_CLIENT=corral IPP_SUITE_ENGINES=corral tests/ipyparallel_suite/run.sh corral ipp-suite-client-all-corral.log
	IPP_SUITE_CLIENT=corral tests/ipyparallel_suite/run.sh stock ipp-suite-client-stock-peers.log

.PHONY: clean
clean:  ## remove build output and the virtualenv
	cargo clean
	rm -rf $(VENV)
