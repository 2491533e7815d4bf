# forkd: the two commands of the quickstart are `make demo` and `make test`.
# Each installs what is missing (scripts/install-deps.sh) and builds what it needs.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all deps build test unit demo bench clean

all: build

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j$(JOBS)

# Unit tests, the fuzz run, then integration tests that boot real QEMU VMs.
test: build
	cd $(BUILD) && ctest --output-on-failure -j2

unit: build
	cd $(BUILD) && ctest --output-on-failure -j2 -L unit

demo: build
	$(BUILD)/forkd demo

bench: build
	$(BUILD)/forkd bench boot --image minimal --runs 5 --machines microvm,pc

clean:
	rm -rf $(BUILD)
