# forkd: the two commands of the quickstart are `make demo` and `make test`.
# Each installs what is missing (scripts/install-deps.sh) and builds what it needs.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all deps build qemu-static test unit demo bench clean

all: build

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_ARGS)
	cmake --build $(BUILD) -j$(JOBS)

# forkd's static QEMU build (scripts/build-qemu-static.sh, about 5 minutes on 2 cores the first
# time): sandboxes without a network run it (src/vmm/static_qemu.h). `make demo` does not wait for
# it, and uses it once built.
qemu-static: deps
	JOBS=$(JOBS) bash scripts/build-qemu-static.sh $(BUILD)

# Unit tests, the fuzz run, then integration tests that boot real QEMU VMs.
test: build qemu-static
	cd $(BUILD) && ctest --output-on-failure -j2

unit: build
	cd $(BUILD) && ctest --output-on-failure -j2 -L unit

# Only forkd and forkd-agent, with the guest kernel and the python rootfs built beside them, then
# the tour (scripts/demo.sh; logs in $(BUILD)/logs).
demo:
	BUILD=$(BUILD) JOBS=$(JOBS) CMAKE_ARGS="$(CMAKE_ARGS)" bash scripts/demo.sh

# The benchmark suite (bench/run-suite.sh; many minutes, and it loads the machine): every bench
# with the recorded options into bench/results/SERIES-DATE.json, the charts, then the figures
# tables of the READMEs (bench/make_tables.py). ONLY=spawn,branch-256 runs a subset; QUICK=1
# runs each once with the smallest options into a temporary directory (a check of the suite).
bench: build qemu-static
	bash bench/run-suite.sh --forkd $(BUILD)/forkd $(if $(ONLY),--only $(ONLY)) \
	  $(if $(filter 1,$(QUICK)),--quick)

clean:
	rm -rf $(BUILD)
