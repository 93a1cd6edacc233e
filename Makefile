# amtsim — see README.md. Every target works on a fresh clone.
GO      ?= go
PKGS    := ./...
FUZZTIME ?= 10s
# Benchmarks that build fleets run once per size; -benchtime=1x keeps them honest.
BENCHFLAGS ?= -run '^$$' -bench . -benchmem

.PHONY: run test vet fmt-check unit bench fuzz build clean

## run: 25 OptiPlex 960s provisioned end to end by the embedded SCS on the embedded LAN (no root, no network)
run:
	$(GO) run ./cmd/amtsim fleet -n 25

## test: gofmt check, go vet, unit and integration tests (root-only tests skip without root)
test: fmt-check vet unit

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -count=1 -timeout 10m $(PKGS)

## bench: speed and memory figures (bytes and goroutines per idle device, …)
bench:
	$(GO) test $(BENCHFLAGS) -timeout 30m $(PKGS)

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
