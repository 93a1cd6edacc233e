# amtsim — see README.md. Every target works on a fresh clone.
GO      ?= go
PKGS    := ./...
FUZZTIME ?= 10s
# Benchmarks that build fleets run once per size; -benchtime=1x keeps them honest.
BENCHFLAGS ?= -run '^$$' -bench . -benchmem

.PHONY: run test peers vet fmt-check unit bench fuzz build clean

## run: 25 OptiPlex 960s provisioned end to end by the embedded SCS on the embedded LAN (no root, no network)
run:
	$(GO) run ./cmd/amtsim fleet -n 25

## test: gofmt check, go vet, the real peers the tests need (installed when missing and possible),
## unit and integration tests; tests whose peer is missing or that need root skip, listed at the end
test: fmt-check vet peers unit

## peers: install the programs the tests talk to (internal/peer/peers.txt) when missing, and MeshCentral into a cache (scripts/meshcentral)
peers:
	@bash scripts/peers
	@bash scripts/meshcentral

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# Tests that skip for a missing peer or for want of root append a line to
# $$AMTSIM_SKIPPED (internal/peer); the list is printed after the run.
# The shipped scenarios (scenarios/shipped_test.go) run a second time
# without -race: the race detector would make the Hello storm's 5,000
# devices take many minutes.
unit:
	@skipped=$$(mktemp -t amtsim-skipped.XXXXXX); \
	AMTSIM_SKIPPED=$$skipped $(GO) test -race -count=1 -timeout 10m $(PKGS); rc=$$?; \
	AMTSIM_SKIPPED=$$skipped $(GO) test -count=1 -timeout 10m -run '^TestShippedScenarios$$' ./scenarios || rc=1; \
	if [ -s $$skipped ]; then \
	  echo "Skipped $$(sort -u $$skipped | wc -l) tests (missing peers or not root):"; sort -u $$skipped | sed 's/^/  /'; \
	fi; rm -f $$skipped; exit $$rc

## bench: speed and memory figures (bytes and goroutines per idle device, …)
bench: peers
	$(GO) test $(BENCHFLAGS) -timeout 90m $(PKGS)

## fuzz: every fuzz target for FUZZTIME each
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

build:
	$(GO) build -o bin/amtsim ./cmd/amtsim

clean:
	rm -rf bin
