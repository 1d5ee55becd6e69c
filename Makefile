# Entry points of the GPU telemetry pipeline: tests, demo, coverage, images, CRDs, chart checks
# and fuzzing. `make` (or `make help`) lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

# Registry and tag of the images that `images`, `tag` and `push` build and publish.
REGISTRY ?= ghcr.io/gputelemetry
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
# Second tag that `make tag` adds: the workspace version, which the chart's appVersion and the
# operator's default image tag use.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
RELEASE_TAG ?= $(VERSION)
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE := $(shell sed -n 's/^repository = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
DOCKER ?= docker

# Seconds each fuzz target runs in `make fuzz`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := labels dcgm_csv

# One image per component. The names must equal telemetry_core::contract::images; the test
# workloads/core/tests/dockerfiles.rs fails when they differ.
COMPONENTS := operator broker producer consumer metrics
IMAGE_operator := telemetry-operator
IMAGE_broker := telemetry-broker
IMAGE_producer := telemetry-producer
IMAGE_consumer := telemetry-consumer
IMAGE_metrics := telemetry-metrics
DOCKERFILE_operator := operator/Dockerfile
DOCKERFILE_broker := workloads/broker/Dockerfile
DOCKERFILE_producer := workloads/producer/Dockerfile
DOCKERFILE_consumer := workloads/consumer/Dockerfile
DOCKERFILE_metrics := workloads/metrics/Dockerfile

image = $(REGISTRY)/$(IMAGE_$(1))

.PHONY: help test demo bench build coverage coverage-check images tag push crds helm-lint \
	validate-k8s fuzz clean

help: ## List the targets
	@echo "Usage: make <target> [VARIABLE=value ...]"
	@echo
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN { FS = ":.*## " } { printf "  %-16s %s\n", $$1, $$2 }'
	@echo
	@echo "Variables: REGISTRY=$(REGISTRY) TAG=$(TAG) RELEASE_TAG=$(RELEASE_TAG)"
	@echo "           CSV=<DCGM export for demo> FUZZ_SECONDS=$(FUZZ_SECONDS)"

test: ## Install test dependencies, build, run every test and the CRD and chart checks (scripts/test.sh)
	bash scripts/test.sh

demo: ## Run the whole pipeline locally on data/dcgm_sample.csv, or on CSV=path/to/export.csv
	bash scripts/demo.sh $(if $(CSV),"$(CSV)")

bench: ## Run the benchmarks (scripts/bench.sh)
	bash scripts/bench.sh

build: ## Build every binary of the workspace (debug)
	cargo build --workspace --bins --locked

coverage: ## Run the tests once under cargo-llvm-cov; writes target/coverage/lcov.info and html/
	bash scripts/install-deps.sh
	bash scripts/coverage.sh report

coverage-check: ## Like coverage, but fail below 70 % line coverage (COVERAGE_MIN_LINES)
	bash scripts/install-deps.sh
	bash scripts/coverage.sh check

images: ## Build every image as $(REGISTRY)/<name>:$(TAG) (needs a Docker engine with BuildKit)
	@$(foreach component,$(COMPONENTS), \
		echo "==> $(call image,$(component)):$(TAG)"; \
		$(DOCKER) build \
			--file $(DOCKERFILE_$(component)) \
			--tag $(call image,$(component)):$(TAG) \
			--build-arg VERSION=$(VERSION) \
			--build-arg REVISION=$(REVISION) \
			--build-arg SOURCE=$(SOURCE) \
			. ;)

tag: ## Tag every image $(TAG) also as $(RELEASE_TAG) (default: the workspace version)
	@$(foreach component,$(COMPONENTS), \
		echo "==> $(call image,$(component)):$(RELEASE_TAG)"; \
		$(DOCKER) tag $(call image,$(component)):$(TAG) $(call image,$(component)):$(RELEASE_TAG);)

push: ## Push every image tagged $(TAG), and $(RELEASE_TAG) where `make tag` created it
	@$(foreach component,$(COMPONENTS), \
		$(DOCKER) push $(call image,$(component)):$(TAG); \
		if $(DOCKER) image inspect $(call image,$(component)):$(RELEASE_TAG) >/dev/null 2>&1; then \
			$(DOCKER) push $(call image,$(component)):$(RELEASE_TAG); \
		fi;)

crds: ## Regenerate crds/telemetrypipelines.yaml with the operator's crdgen and copy it into the chart
	@mkdir -p crds
	cargo run -q --locked -p telemetry-operator --bin crdgen > crds/telemetrypipelines.yaml.tmp
	mv crds/telemetrypipelines.yaml.tmp crds/telemetrypipelines.yaml
	cp crds/telemetrypipelines.yaml helm/telemetry-operator/crds/telemetrypipelines.yaml

helm-lint: ## Lint the chart, validate its output for Kubernetes 1.30, check that bad values fail
	bash scripts/check-helm.sh

validate-k8s: ## Validate the objects the operator renders (scripts/validate-k8s.sh)
	bash scripts/validate-k8s.sh

fuzz: ## Fuzz the labels parser and the DCGM CSV reader, FUZZ_SECONDS each (cargo-fuzz)
	bash fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean: ## Remove build output (target/, fuzz/target/); keeps tools in .run/ and fuzz corpora
	cargo clean
	rm -rf fuzz/target crds/telemetrypipelines.yaml.tmp
