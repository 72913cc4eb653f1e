# Sealink: the two commands a new user runs are `make demo` and `make test`.
# Everything else they need is set up here, idempotently: Debian packages, the venv
# from pinned requirements, and pinned, checksum-verified sources in deps/.

SHELL := /bin/bash
ROOT := $(CURDIR)
PYTHON ?= python3
VENV := $(ROOT)/.venv
VPY := $(VENV)/bin/python
DEPS := $(ROOT)/deps
MPY := $(DEPS)/micropython
MICROPY_DIR ?= $(MPY)
BUILD_ROOT := $(ROOT)/build
JOBS ?= $(shell nproc)

APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi gcc-riscv64-unknown-elf \
	picolibc-riscv64-unknown-elf qemu-system-arm qemu-system-misc mosquitto xz-utils spin \
	swtpm swtpm-tools tpm2-tools

# Boards built here.  ESP32_GENERIC and ESP32_GENERIC_C3 need ESP-IDF (not obtainable
# on this machine): see boards/ESP32_GENERIC*/README.md.
BOARDS_HERE := UNIX UNIX_STOCK QEMU_MPS2_AN385 QEMU_VIRT_RV32
BOARDS_IDF := ESP32_GENERIC ESP32_GENERIC_C3
BOARD ?= $(BOARDS_HERE)

USERMOD := $(ROOT)/firmware/usermod
NO_MPY_LIB := $(ROOT)/firmware/no-micropython-lib
MPY_CROSS := $(MICROPY_DIR)/mpy-cross/build/mpy-cross

STAMP_APT := $(DEPS)/.stamp-apt
STAMP_VENV := $(VENV)/.stamp-requirements
STAMP_MPY := $(MPY)/.sealink-fetched
STAMP_MONO := $(DEPS)/monocypher/.sealink-fetched
STAMP_SODIUM := $(DEPS)/libsodium/.sealink-fetched
STAMP_PATCH := $(MICROPY_DIR)/.sealink-patched

.PHONY: all setup firmware test test-fast demo bench lint format clean distclean sizes $(BOARDS_HERE) $(BOARDS_IDF)

all: firmware

setup: $(STAMP_APT) $(STAMP_VENV) $(STAMP_MONO) $(STAMP_SODIUM) $(STAMP_PATCH) $(MPY_CROSS)

# --- Debian packages -------------------------------------------------------------------
$(STAMP_APT):
	@mkdir -p $(DEPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing Debian packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

# --- Python venv from pinned requirements ------------------------------------------------
$(STAMP_VENV): requirements.txt pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# --- Pinned sources -----------------------------------------------------------------------
$(STAMP_MPY): | $(STAMP_APT)
	bash tools/fetch-micropython.sh

$(STAMP_MONO): | $(STAMP_VENV)
	PYTHON=$(VPY) bash tools/fetch-monocypher.sh

$(STAMP_SODIUM): | $(STAMP_APT)
	bash tools/fetch-libsodium.sh

# Our port changes (firmware/patches), applied once to the fetched source.
$(STAMP_PATCH): $(if $(filter $(MPY),$(MICROPY_DIR)),$(STAMP_MPY)) $(wildcard firmware/patches/*/*.patch)
	bash tools/apply-patches.sh $(MICROPY_DIR)

$(MPY_CROSS): | $(STAMP_PATCH) $(STAMP_APT)
	$(MAKE) -C $(MICROPY_DIR)/mpy-cross -j$(JOBS) >/dev/null

# --- Firmware -----------------------------------------------------------------------------
firmware: $(BOARD)
	@$(VPY) tools/firmware_size.py $(filter-out UNIX_STOCK,$(BOARD))

MAKE_UNIX = $(MAKE) -C $(MICROPY_DIR)/ports/unix -j$(JOBS) MPY_LIB_DIR=$(NO_MPY_LIB) \
	VARIANT_DIR=$(ROOT)/boards/$(1) BOARD_DIR=$(ROOT)/boards/$(1)
MAKE_QEMU = $(MAKE) -C $(MICROPY_DIR)/ports/qemu -j$(JOBS) MPY_LIB_DIR=$(NO_MPY_LIB) \
	BOARD=$(1) BOARD_DIR=$(ROOT)/boards/$(1) RV32_ARCH=rv32imac

# Each board is built twice: with the module (the firmware) and without it (the
# baseline tools/firmware_size.py compares against to report the module's flash cost).
UNIX: setup
	@echo "firmware: UNIX"; mkdir -p $(BUILD_ROOT)
	@$(call MAKE_UNIX,UNIX) BUILD=$(BUILD_ROOT)/UNIX USER_C_MODULES=$(USERMOD) >$(BUILD_ROOT)/UNIX.log 2>&1 \
		|| { tail -40 $(BUILD_ROOT)/UNIX.log; exit 1; }
	@$(call MAKE_UNIX,UNIX) BUILD=$(BUILD_ROOT)/baseline/UNIX >$(BUILD_ROOT)/UNIX-baseline.log 2>&1 \
		|| { tail -40 $(BUILD_ROOT)/UNIX-baseline.log; exit 1; }
	@$(VPY) tools/reference.py UNIX >/dev/null

UNIX_STOCK: setup
	@echo "firmware: UNIX_STOCK"; mkdir -p $(BUILD_ROOT)
	@$(call MAKE_UNIX,UNIX_STOCK) BUILD=$(BUILD_ROOT)/UNIX_STOCK >$(BUILD_ROOT)/UNIX_STOCK.log 2>&1 \
		|| { tail -40 $(BUILD_ROOT)/UNIX_STOCK.log; exit 1; }

# A board's configuration (its folder, the shared QEMU code, our port patches) decides
# which modules and qstrs the build generates; MicroPython's incremental build does not
# notice such a change, so a board whose configuration changed is rebuilt from scratch.
BOARD_CONFIG = cat boards/$(1)/* boards/qemu_common/* boards/sealink_manifest.py firmware/patches/*/* 2>/dev/null | sha256sum
FRESH_BUILD = cfg=$$($(call BOARD_CONFIG,$(1))); \
	if [ "$$(cat $(BUILD_ROOT)/$(1).config 2>/dev/null)" != "$$cfg" ]; then \
		rm -rf $(BUILD_ROOT)/$(1) $(BUILD_ROOT)/baseline/$(1); mkdir -p $(BUILD_ROOT); \
		echo "$$cfg" > $(BUILD_ROOT)/$(1).config; fi

QEMU_MPS2_AN385 QEMU_VIRT_RV32: setup
	@echo "firmware: $@"; mkdir -p $(BUILD_ROOT)
	@$(call FRESH_BUILD,$@)
	@$(call MAKE_QEMU,$@) BUILD=$(BUILD_ROOT)/$@ USER_C_MODULES=$(USERMOD) >$(BUILD_ROOT)/$@.log 2>&1 \
		|| { tail -40 $(BUILD_ROOT)/$@.log; exit 1; }
	@$(call MAKE_QEMU,$@) BUILD=$(BUILD_ROOT)/baseline/$@ >$(BUILD_ROOT)/$@-baseline.log 2>&1 \
		|| { tail -40 $(BUILD_ROOT)/$@-baseline.log; exit 1; }
	@$(VPY) tools/reference.py $@ >/dev/null

$(BOARDS_IDF):
	@echo "firmware: $@ is built with ESP-IDF, which cannot be installed on this machine."
	@echo "          See boards/$@/README.md for the idf.py command line."
	@exit 2

sizes:
	@$(VPY) tools/firmware_size.py --modules UNIX QEMU_MPS2_AN385 QEMU_VIRT_RV32

# --- Tests, demo, benchmarks ----------------------------------------------------------------
test: firmware lint
	$(VPY) -m pytest -q tests

test-fast: setup
	$(VPY) -m pytest -q tests -m "not slow"

# The emulated fleet: 2 Cortex-M3 and 2 RV32 boards under QEMU and 4 unix-port devices,
# a gateway and the modeled LoRa air (see sim/scenarios/demo.toml).  Writes build/demo/.
demo: UNIX QEMU_MPS2_AN385 QEMU_VIRT_RV32
	$(VPY) -m sim.fleet sim/scenarios/demo.toml --out $(BUILD_ROOT)/demo

# Every benchmark, each writing its JSON (and its console tables) into build/bench/;
# bench/report.py then writes build/bench/results.md and results.json.
BENCH_DIR = $(BUILD_ROOT)/bench
bench: firmware
	@mkdir -p $(BENCH_DIR)
	@git rev-parse --short HEAD > $(BENCH_DIR)/commit 2>/dev/null || rm -f $(BENCH_DIR)/commit
	set -o pipefail; $(VPY) bench/device_paths.py --json $(BENCH_DIR)/device_paths.json | tee $(BENCH_DIR)/device_paths.txt
	set -o pipefail; $(VPY) bench/device_heap.py --json $(BENCH_DIR)/heap.json | tee $(BENCH_DIR)/heap.txt
	set -o pipefail; $(VPY) bench/gateway_scale.py --json $(BENCH_DIR)/gateway.json | tee $(BENCH_DIR)/gateway.txt
	set -o pipefail; $(VPY) bench/gateway_path.py --json $(BENCH_DIR)/gateway_path.json | tee $(BENCH_DIR)/gateway_path.txt
	$(VPY) tools/firmware_size.py --json UNIX QEMU_MPS2_AN385 QEMU_VIRT_RV32 > $(BENCH_DIR)/sizes.json
	set -o pipefail; $(VPY) bench/crypto_speed.py --json $(BENCH_DIR)/crypto.json | tee $(BENCH_DIR)/crypto.txt
	set -o pipefail; $(VPY) bench/air_bytes.py --json $(BENCH_DIR)/air.json | tee $(BENCH_DIR)/air.txt
	set -o pipefail; $(VPY) bench/first_contact.py --json $(BENCH_DIR)/first_contact.json | tee $(BENCH_DIR)/first_contact.txt
	set -o pipefail; $(VPY) bench/aloha.py --out $(BENCH_DIR) | tee $(BENCH_DIR)/aloha.txt
	set -o pipefail; $(VPY) bench/cell_scale.py --out $(BENCH_DIR) | tee $(BENCH_DIR)/cell.txt
	$(VPY) bench/report.py --dir $(BENCH_DIR)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(BUILD_ROOT)

distclean: clean
	rm -rf $(DEPS) $(VENV)
