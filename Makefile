# vmssfs — every target does its own set-up on a fresh machine (Node, npm and apt are assumed).
SHELL := /bin/bash
.DEFAULT_GOAL := build

# fuse-native's prebuilt binary links libfuse.so.2; fusermount unmounts. Both from Debian, and
# so are the independent tools the suite checks the mount with (strings and readelf, yara, getfattr, gdb),
# and what the slow-disk and other-user tests build with (mkfs.ext4, losetup and mount, setpriv).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP_SYS := node_modules/.vmssfs-system-deps
STAMP_NPM := node_modules/.package-lock.json

.PHONY: build test demo fixtures bench fuzz lint typecheck deps system-deps clean

system-deps:
	@if ! { ldconfig -p | grep -q 'libfuse\.so\.2' && command -v fusermount && command -v strings && command -v yara && command -v getfattr && command -v gdb && command -v mkfs.ext4 && command -v losetup && command -v setpriv; } >/dev/null; then \
	  echo "installing Debian's fuse, libfuse2, binutils, yara, attr, gdb, e2fsprogs, mount and util-linux"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse libfuse2 binutils yara attr gdb e2fsprogs mount util-linux >/dev/null; \
	fi

$(STAMP_NPM): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: system-deps $(STAMP_NPM)

build: deps
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
	rm -rf dist
