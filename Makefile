# upwatch: build, test and run the whole Go workspace.
#
# The Makefile knows the workspace: every target that works per module
# (test, vet, lint, tidy, fmt) runs over the modules go.work lists.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO ?= go
# Every module of the workspace, as a directory.
MODULES = $(shell $(GO) list -m -f '{{.Dir}}')
BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X upwatch.dev/services/upwatch/cli.Version=$(VERSION)
GOLANGCI_LINT := github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

# binary name: the service directory it is built from (services/<dir>/cmd/<binary>).
BINARIES := upwatch:upwatch upwatch-ticker:ticker upwatch-checker:checker upwatch-results:results upwatch-api:api

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## Install what building and testing need (PostgreSQL server binaries; checks Go)
	@bash scripts/setup.sh

.PHONY: build
build: ## Build all five binaries into ./bin
	@mkdir -p $(BIN)
	@for pair in $(BINARIES); do \
		bin=$${pair%%:*}; dir=$${pair##*:}; \
		echo "go build -o bin/$$bin ./services/$$dir/cmd/$$bin"; \
		$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/$$bin ./services/$$dir/cmd/$$bin; \
	done

.PHONY: run
run: setup build ## Run everything on this machine with the example monitors
	./bin/upwatch up --config deploy/examples/monitors.yaml --data-dir ./upwatch-data

.PHONY: test
test: setup ## Run every module's tests with the race detector
	$(GO) test -race -count=1 -timeout 20m $(addsuffix /...,$(MODULES))

# Benchmark settings: make bench WORKLOAD=steady MONITORS=10000 INTERVAL=10s DURATION=60s
WORKLOAD ?= steady
MONITORS ?= 100000
INTERVAL ?= 60s
DURATION ?= 120s
WARMUP ?= 60s
BENCH_ARGS ?=

.PHONY: bench
bench: setup ## Benchmark the whole system (WORKLOAD, MONITORS, INTERVAL, DURATION, WARMUP, BENCH_ARGS)
	$(GO) run ./tests/bench/cmd/upwatch-bench --workload $(WORKLOAD) --monitors $(MONITORS) \
		--interval $(INTERVAL) --duration $(DURATION) --warmup $(WARMUP) --out bench-results $(BENCH_ARGS)

.PHONY: vet
vet: ## Run go vet over every module
	$(GO) vet $(addsuffix /...,$(MODULES))

.PHONY: lint
lint: ## Run golangci-lint (v2, .golangci.yaml) in every module
	@for dir in $(MODULES); do \
		echo "lint $$dir"; \
		(cd $$dir && $(GO) run $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yaml ./...); \
	done

.PHONY: fmt
fmt: ## Format every Go file (gofmt -s)
	gofmt -s -w $(MODULES)

.PHONY: tidy
tidy: ## Run go mod tidy in every module
	@for dir in $(MODULES); do \
		echo "tidy $$dir"; \
		(cd $$dir && $(GO) mod tidy); \
	done

.PHONY: clean
clean: ## Remove built binaries and test caches (keeps ./upwatch-data)
	rm -rf $(BIN) bench-results
	$(GO) clean -testcache
