# vmssfs — every target does its own set-up on a fresh machine (Node, npm and apt are assumed).
SHELL := /bin/bash
.DEFAULT_GOAL := build

# fuse-native's prebuilt binary links libfuse.so.2; fusermount unmounts. Both from Debian, and
# so are the independent tools the suite checks the mount with (strings and readelf, yara, getfattr, gdb),
# and what the slow-disk and other-user tests build with (mkfs.ext4, losetup and mount, setpriv).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP_SYS := node_modules/.vmssfs-system-deps
STAMP_NPM := node_modules/.package-lock.json

.PHONY: build test demo fixtures bench fuzz lint typecheck deps system-deps compiler native native-asan prebuild clean

system-deps:
	@if ! { ldconfig -p | grep -q 'libfuse\.so\.2' && command -v fusermount && command -v strings && command -v yara && command -v getfattr && command -v gdb && command -v mkfs.ext4 && command -v losetup && command -v setpriv; } >/dev/null; then \
	  echo "installing Debian's fuse, libfuse2, binutils, yara, attr, gdb, e2fsprogs, mount and util-linux"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse libfuse2 binutils yara attr gdb e2fsprogs mount util-linux >/dev/null; \
	fi
	@# The web server the HTTP tests and benchmark read evidence from (run by them on a loopback
	@# port, never as a service), curl (the benchmark's reference) and openssl (a test certificate).
	@if ! { { command -v nginx || test -x /usr/sbin/nginx; } && command -v curl && command -v openssl; } >/dev/null; then \
	  echo "installing Debian's nginx-light, curl and openssl"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light curl openssl >/dev/null; \
	fi

$(STAMP_NPM): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: system-deps $(STAMP_NPM)

# The native read path (native/, see src/fuse/native.ts) is C built by node-gyp, which npm ships;
# it needs a C compiler, make and python3. libfuse's headers come from fuse-native's dependency.
compiler:
	@if ! { command -v cc && command -v make && command -v python3; } >/dev/null; then \
	  echo "installing Debian's build-essential and python3 (to build the native read path)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential python3 >/dev/null; \
	fi

# Node's own headers when the installation has them (no download), else node-gyp fetches them.
NODE_PREFIX := $(shell node -p "require('path').resolve(process.execPath, '../..')")
export npm_config_nodedir := $(if $(wildcard $(NODE_PREFIX)/include/node/node_api.h),$(NODE_PREFIX))
NATIVE := native/build/Release/vmssfs_native.node
NATIVE_SRC := native/binding.gyp $(wildcard native/*.c native/*.h)

$(NATIVE): $(NATIVE_SRC) | deps compiler
	npm run -s build:native

native: $(NATIVE)

# The same addon built with AddressSanitizer, in its own directory (the suite mounts with it once;
# no deps here: the suite runs after `make build`, and must not reinstall node_modules under itself).
native-asan: $(NATIVE_SRC) | compiler
	rm -rf native/build-asan && mkdir -p native/build-asan && cp $(NATIVE_SRC) native/build-asan/
	cd native/build-asan && NODE_PATH=$(CURDIR)/node_modules npm run -s --prefix $(CURDIR) build:native-asan

# Refresh the linux-x64 binary shipped in the package (commit it after a change to native/).
prebuild: $(NATIVE)
	mkdir -p prebuilds/linux-x64 && cp $(NATIVE) prebuilds/linux-x64/vmssfs_native.node

build: deps native
	npx tsc -p .

typecheck: deps
	npx tsc -p . --noEmit

lint: deps
	npx eslint .

test: build lint
	npx mocha

demo: build
	bash scripts/demo.sh

fixtures: build
	node dist/scripts/make-fixtures.js fixtures

N ?= 2000
SEED ?= 1
fuzz: build
	node --expose-gc dist/scripts/fuzz.js --iterations $(N) --seed $(SEED)

bench: build
	node dist/scripts/bench.js

clean:
	rm -rf dist native/build native/build-asan
