# VirtuTune Link. `make test` installs what the tests need and is missing
# (on Debian, via apt-get), then runs every test; `make run` runs the server.
SHELL := /bin/bash
GO ?= go
# A count, not a duration: Go 1.26's fuzz coordinator can fail a run with
# "context deadline exceeded" at a -fuzztime deadline (golang/go#75804).
FUZZTIME ?= 200000x
FUZZTIME_TOKEN ?= 30000x
# Debian packages the tests use: redis-server (broker tests), chromium (browser
# tests), nginx (proxy test), iproute2 + util-linux (network namespaces),
# nodejs (the browser client's unit tests and the shared delivery vectors) + npm (axe-core for the browser tests).
DEB_PKGS := redis-server chromium nginx-light iproute2 util-linux nodejs npm
DEB_BINS := redis-server chromium nginx ip unshare node npm

.PHONY: test deps vet unit fuzz run build bench

test: deps vet unit fuzz

deps:
	@missing=""; \
	for i in $$(seq 1 $(words $(DEB_BINS))); do \
	  bin=$$(echo $(DEB_BINS) | cut -d' ' -f$$i); pkg=$$(echo $(DEB_PKGS) | cut -d' ' -f$$i); \
	  command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing (tests that need them will skip outside CI):$$missing"; fi; \
	fi
	@# axe-core, pinned by web/testdata/package-lock.json, injected into the pages by the browser tests.
	@if [ ! -f web/testdata/node_modules/axe-core/axe.min.js ] && command -v npm >/dev/null 2>&1; then \
	  echo "installing axe-core (npm ci in web/testdata)"; \
	  (cd web/testdata && npm ci --no-audit --no-fund --loglevel=error); \
	fi

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# The multi-process tests (server instances, Redis, nginx, the soak test) run
# on their own after the rest, so that they do not compete for the 2 cores
# with the other packages' race-instrumented tests.
HEAVY := ./test

unit:
	$(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v '/test$$')
	$(GO) test -race -count=1 -timeout 10m $(HEAVY)

# Each fuzz target runs a bounded number of inputs on top of its committed seed corpus.
fuzz:
	$(GO) test ./protocol/ -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/ -run '^$$' -fuzz '^FuzzChord$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/ -run '^$$' -fuzz '^FuzzSignal$$' -fuzztime $(FUZZTIME)
	$(GO) test ./signaling/ -run '^$$' -fuzz '^FuzzTokenParse$$' -fuzztime $(FUZZTIME_TOKEN)

run:
	$(GO) run ./cmd/virtutune-server

build:
	$(GO) build -o bin/ ./cmd/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./protocol/ ./signaling/
