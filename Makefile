# Mercato — the map of habits. `make help` lists the targets.

GO      ?= go
BIN     := bin/mercato
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Flags for `make up`, e.g. make up UP_FLAGS="--single-process --http 127.0.0.1:9090".
UP_FLAGS ?=

.DEFAULT_GOAL := help
.PHONY: help up build test lint generate bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

up: build ## build and start the whole platform with a demo catalog
	$(BIN) up $(UP_FLAGS)

build: ## build the mercato binary into bin/
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mercato

test: lint ## lint, then unit, integration and end-to-end tests with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

lint: ## gofmt, go vet, staticcheck and the import rules
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^proto/gen/')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -count=1 ./test/arch/

generate: ## regenerate the Go code of the protobuf contracts (buf)
	scripts/generate.sh

bench: build ## start a platform, seed 100,000 products, run `mercato load browse`, `auth` and `flash-sale`
	scripts/bench.sh

clean: ## remove build output and local platform state
	rm -rf bin .mercato .mercato-bench
