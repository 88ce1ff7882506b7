# Warren — see README.md. Targets: demo, demo-wg, test, build, man, package, vet, fuzz, bench, bench-go, bench-relay-mesh, clean.
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILT   ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X github.com/warrenmesh/warren/internal/cli.Version=$(VERSION) -X github.com/warrenmesh/warren/internal/cli.Commit=$(COMMIT) -X github.com/warrenmesh/warren/internal/cli.BuildDate=$(BUILT)

.PHONY: all build man package deps demo demo-wg test check vet fmt-check unit fuzz bench bench-go clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/warren ./cmd/warren

# Man pages (section 1) of every command into bin/man, generated from the
# same definitions as the help (the package ships them, gzipped).
man: build
	$(BIN)/warren man $(BIN)/man

# The pinned wireguard-go (a tool in go.mod), for side-by-side runs.
$(BIN)/wireguard-go: go.mod go.sum
	$(GO) build -o $@ golang.zx2c4.com/wireguard

# A Debian package (bin/warren_VERSION_ARCH.deb): /usr/bin/warren, the
# systemd units warren-server, warren-relay and warren-daemon, examples in
# /etc/warren, a `warren` system user; nothing is enabled on install. See
# packaging/. Built with dpkg-deb, which every Debian machine has, rather
# than nfpm: no new Go dependency or tool for a tree of a dozen files and
# a control file.
package: build
	./packaging/build-deb.sh $(BIN)/warren $(VERSION) $(BIN)

deps:
	./scripts/install-deps.sh

# A warren: server (embedded SQLite) and nodes in network namespaces:
# admin, join, status, ping by name, IPv6, throughput, a node joined by
# signing in at the lab's identity provider (bin/demo-idp, demo/idp: built
# for the demo only, never part of warren), the console, a userspace node.
demo: deps build
	$(GO) build -trimpath -o $(BIN)/demo-idp ./demo/idp
	./demo/mesh-demo.sh $(BIN)/warren $(BIN)/demo-idp

# Two `warren wg` hosts in network namespaces, configured with wg(8).
demo-wg: deps build
	./demo/wg-demo.sh $(BIN)/warren

# The whole suite, as CI runs it (root, WARREN_REQUIRE_NETNS=1 makes
# namespace tests fail instead of skip).
test: deps fmt-check vet unit

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -count=1 -run '^TestReplicas$$' ./bench/controlbench

# Short coverage-guided runs of every fuzz target (discovered with
# go test -list, see scripts/fuzz-all.sh).
FUZZTIME ?= 20s
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz-all.sh

# raw veth vs wireguard-go vs warren in network namespaces (root; see
# bench/run.sh). Flags: make bench BENCHFLAGS="-quick" (or -rounds 3 ...).
bench:
	./bench/run.sh $(BENCHFLAGS)

# Go micro-benchmarks with -benchmem.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

clean:
	rm -rf $(BIN)

# Control plane: N simulated nodes against the coordination server (a child
# process; CPU and RSS from /proc). See bench/controlbench. The 10k run
# takes a while and a few GB. Flags: make bench-control CONTROLBENCHFLAGS="-changes 40".
# Replicas: CONTROLBENCHFLAGS="-replicas 2 -db postgres://..." (node i streams
# from replica i mod N; per-replica CPU and RSS are reported).
.PHONY: bench-control
bench-control:
	$(GO) build -o $(BIN)/controlbench ./bench/controlbench
	$(BIN)/controlbench -nodes 1000 $(CONTROLBENCHFLAGS)
	$(BIN)/controlbench -nodes 10000 $(CONTROLBENCHFLAGS)

# File drop: a 1 GiB `warren file cp` next to iperf3 over the same tunnel
# (bench/drop.sh; root, netns). Run it alone.
.PHONY: bench-drop
bench-drop:
	./bench/drop.sh

# The packet relay's throughput and CPU per GB (relay in a child process).
# Flags: make bench-relay RELAYBENCHFLAGS="-pairs 2 -time 20s".
.PHONY: bench-relay
bench-relay:
	$(GO) build -o $(BIN)/relaybench ./bench/relaybench
	$(BIN)/relaybench -pairs 1 $(RELAYBENCHFLAGS)
	$(BIN)/relaybench -pairs 4 $(RELAYBENCHFLAGS)

# The relay through the mesh, as users run it: Warren's embedded and
# standalone relays and a peer relay against headscale's embedded DERP with tailscaled
# (built once into bin/bench from a throwaway module), direct UDP blocked,
# iperf3 through the mesh (bench/relaymesh.sh; root, netns). Run it alone.
# Flags: make bench-relay-mesh RELAYMESHFLAGS="-rounds 3 -duration 20s".
.PHONY: bench-relay-mesh
bench-relay-mesh:
	./bench/relaymesh.sh $(RELAYMESHFLAGS)
