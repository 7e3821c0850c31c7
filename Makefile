# mirrorkeeper — run `make` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
# Python 3.13 is the Lambda runtime. pyenv machines have it as 3.13.x; elsewhere python3.13 on PATH.
PY313 := $(shell for v in $$(pyenv versions --bare 2>/dev/null | grep '^3\.13' | sort -rV) ""; do \
	PYENV_VERSION=$$v python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)
STAMP := $(VENV)/.installed
PY_DIRS := $(wildcard layers devtools functions tests bench)
# The repository root, also when sam build runs this Makefile from a scratch copy of the layer.
ROOT := $(patsubst %/,%,$(dir $(abspath $(firstword $(MAKEFILE_LIST)))))
# AWS SAM CLI (with cfn-lint) and checkov each pin their own boto3: one venv each, inside .venv so
# that `make clean` and .gitignore cover them.
TOOLS := $(VENV)/tools
TOOLS_STAMP := $(TOOLS)/.installed
SAM := SAM_CLI_TELEMETRY=0 $(TOOLS)/sam/bin/sam
IMAGE_REPO ?= mirrorkeeper
# A host's config file (README.md, "Deploy"): mirrors.toml when there is one; none, a host of one.
MIRRORS ?= $(wildcard mirrors.toml)
# sam deploy with the parameters MIRRORS gives the stack, then the file into the stack's bucket.
DEPLOY := SAM_CLI_TELEMETRY=0 $(BIN)/python -m mirrorkeeper_dev.deploy $(if $(MIRRORS),--mirrors $(MIRRORS))
IMAGE_TAG ?= $(shell date -u +%Y%m%d%H%M%S)-$(shell git rev-parse --short HEAD 2>/dev/null || echo local)

.PHONY: help install tools demo test test-unit test-functional test-e2e test-template lint lint-template format bench pr \
	build image check-mirrors deploy deploy-guided delete clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv (Python 3.13) with the package and dev tools; install the system tools the tests run if absent

$(STAMP): requirements-dev.txt layers/mirrorkeeper/pyproject.toml devtools/pyproject.toml
	@command -v rsync >/dev/null || { echo "rsync not found: installing it from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq rsync >/dev/null; }
	@command -v node >/dev/null || { echo "node not found (the CloudFront Function tests run under it): installing it from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq nodejs >/dev/null; }
	@command -v chromium >/dev/null || { echo "chromium not found (the status page's browser test runs it): installing it from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@command -v lftp >/dev/null || { echo "lftp not found (the FTP front end's mirror test runs it): installing it from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq lftp >/dev/null; }
	@command -v mirmon >/dev/null && command -v wget >/dev/null || { echo "mirmon not found (the freshness tests run Debian's mirror checker): installing it from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq mirmon wget >/dev/null; }
	@# The real package managers' tests build apt and yum repositories and read them with apt-get and dnf.
	@missing=""; for tool in apt-ftparchive:apt-utils gpg:gpg rpmbuild:rpm createrepo_c:createrepo-c dnf:dnf; do \
		command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; done; \
	dpkg -s dnf-plugins-core >/dev/null 2>&1 || missing="$$missing dnf-plugins-core"; \
	[ -z "$$missing" ] || { echo "not found (the apt-get and dnf tests run them):$$missing; installing from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; }
	@if [ -z "$(PY313)" ]; then echo "error: Python 3.13 not found. Install it (pyenv install 3.13 or your OS packages) so that 'python3.13' runs, then rerun make." >&2; exit 2; fi
	@test -x $(BIN)/python || $(PY313) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt -e "layers/mirrorkeeper[ftp]" -e devtools
	@touch $(STAMP)

demo: install ## a mirror host on this machine: two sample mirrors (rsync daemon), moto server, sync, HTTP, FTP, rsync, verify
	$(BIN)/mirrorkeeper demo

# Three workers on two cores: most tests wait on real processes and sockets, and a third worker
# fills those waits (about 7.5 minutes instead of 10.5 here).
test: install lint ## lint, then every test tier (the command CI runs)
	$(BIN)/python -m pytest -n 3 tests

test-unit: install ## unit tests only (no network, no subprocess)
	$(BIN)/python -m pytest tests/unit

test-functional: install ## functional tests (real rsync daemon, moto server)
	$(BIN)/python -m pytest tests/functional

test-e2e: install ## the end-to-end test (real processes only)
	$(BIN)/python -m pytest tests/e2e

test-template: install $(TOOLS_STAMP) ## tests of template.yaml (loops expanded by the SAM CLI): wiring, IAM scope, a deploy into the moto server
	$(BIN)/python -m pytest tests/template

tools: $(TOOLS_STAMP) ## install AWS SAM CLI, cfn-lint and checkov in their own venvs (pinned)

$(TOOLS_STAMP): requirements-sam.txt requirements-checkov.txt
	@if [ -z "$(PY313)" ]; then echo "error: Python 3.13 not found (see make install)" >&2; exit 2; fi
	rm -rf $(TOOLS)/sam $(TOOLS)/checkov
	$(PY313) -m venv $(TOOLS)/sam
	$(PY313) -m venv $(TOOLS)/checkov
	@# Two independent installs: in parallel they take the time of the slower one.
	$(TOOLS)/sam/bin/python -m pip install -q --disable-pip-version-check -r requirements-sam.txt & sam=$$!; \
	$(TOOLS)/checkov/bin/python -m pip install -q --disable-pip-version-check -r requirements-checkov.txt & checkov=$$!; \
	wait $$sam && wait $$checkov
	@touch $@

lint-template: $(TOOLS_STAMP) ## sam validate --lint, cfn-lint and checkov on template.yaml (offline)
	$(SAM) validate --lint --template template.yaml --region us-east-1
	$(TOOLS)/sam/bin/cfn-lint template.yaml
	@# checkov cannot read Fn::ForEach: it checks the template as CloudFormation deploys it, loops expanded.
	@mkdir -p .aws-sam
	$(TOOLS)/sam/bin/python devtools/expand_template.py template.yaml > .aws-sam/template.expanded.json
	$(TOOLS)/checkov/bin/checkov --file .aws-sam/template.expanded.json --framework cloudformation --compact --quiet --skip-download

# mypy reads the benchmarks as `python bench/X.py` runs them: each other and both packages by path.
lint: install lint-template ## ruff, mypy and the template checks
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy layers/mirrorkeeper/mirrorkeeper devtools/mirrorkeeper_dev
	MYPYPATH=devtools:layers/mirrorkeeper:bench $(BIN)/mypy bench

format: install ## apply ruff's formatting and fixes
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)

bench: install ## benchmarks with ratios against named baselines (slow; not part of test)
	$(BIN)/python -m pip install -q -r requirements-bench.txt
	$(BIN)/python bench/run.py
	$(BIN)/python bench/frontends.py
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/freshness.py
	$(BIN)/python bench/host.py
	$(BIN)/python bench/push.py
	$(BIN)/python bench/rsync.py

pr: test bench ## everything a reviewer would run

build: install $(TOOLS_STAMP) ## sam build without Docker: Python 3.13 for the functions, manylinux cp313 wheels for the layer
	PATH="$(dir $(PY313)):$$PATH" $(SAM) build --template template.yaml

# Called by `sam build` (the layer's BuildMethod is makefile) in a scratch copy of layers/mirrorkeeper.
# Wheels for the Lambda platform, whatever this machine is; then the package itself (pure Python);
# then this machine's rsync with its libraries, for verify's rsync probe (left out, with a warning,
# where it could not run in the Lambda runtime: docs/rsync.md, "Verification").
build-MirrorkeeperLayer:
	$(ROOT)/$(BIN)/python -m pip install -q --disable-pip-version-check --target "$(ARTIFACTS_DIR)/python" \
		--platform manylinux2014_x86_64 --python-version 3.13 --implementation cp --only-binary=:all: \
		-r "$(ROOT)/requirements-layer.txt"
	$(ROOT)/$(BIN)/python -m pip install -q --disable-pip-version-check --target "$(ARTIFACTS_DIR)/python" --no-deps .
	$(ROOT)/$(BIN)/python -m mirrorkeeper_dev.lambda_rsync "$(ARTIFACTS_DIR)"

image: ## build the container image and push it to ECR (needs Docker and the AWS CLI); prints SyncImageUri
	@command -v docker >/dev/null || { echo "error: docker not found; build the image where Docker runs" >&2; exit 2; }
	@command -v aws >/dev/null || { echo "error: the AWS CLI (aws) is not installed or not on PATH" >&2; exit 2; }
	@set -euo pipefail; \
	uri=$$(aws ecr describe-repositories --repository-names $(IMAGE_REPO) --query 'repositories[0].repositoryUri' \
		--output text 2>/dev/null || aws ecr create-repository --repository-name $(IMAGE_REPO) \
		--image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true \
		--query 'repository.repositoryUri' --output text); \
	aws ecr get-login-password | docker login --username AWS --password-stdin "$${uri%%/*}"; \
	docker build --platform linux/amd64 -t "$$uri:$(IMAGE_TAG)" layers/mirrorkeeper; \
	docker push "$$uri:$(IMAGE_TAG)"; \
	echo "SyncImageUri=$$uri:$(IMAGE_TAG)"

# Before the build: a mistake in mirrors.toml is one line, not a build and then a failed deploy.
check-mirrors: install
	$(DEPLOY) --check

deploy: check-mirrors build ## deploy with the answers saved in samconfig.toml (run deploy-guided first); a host: mirrors.toml, or MIRRORS=FILE
	$(DEPLOY) -- $(TOOLS)/sam/bin/sam deploy

deploy-guided: check-mirrors build ## first deploy: asks for every parameter and saves the answers in samconfig.toml
	$(DEPLOY) -- $(TOOLS)/sam/bin/sam deploy --guided

delete: $(TOOLS_STAMP) ## delete the stack (the mirror bucket is kept; README "Clean up" removes it)
	$(SAM) delete

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
