# Conversation Tracker — developer and CI entry points. `make` alone lists the targets.
#
# The virtualenv lives in .venv; pip uses its default user cache (~/.cache/pip), outside the
# checkout. The local stack (Kafka, FerretDB, SMTP sink, Mailpit) is deploy/local/stack; its
# downloads, data and certificates live under ~/.cache and ~/.local/state, never in the checkout.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

VENV := .venv
STAMP := $(VENV)/.installed
# python3.11 when it is on PATH, else python3; the version is checked before the venv is made.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3)
PYTEST_ARGS ?=
STACK := deploy/local/stack
# apt-get needs root; a developer who is not root gets sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

# check:package pairs `make tools` installs when the check fails: a command (on PATH or in
# /usr/sbin), or a Perl module (a name with "::"). docker-compose is checked apart
# (tests/integration/test_compose.py validates the compose file with it).
#   dnsmasq: the loopback DNS server of the mail-authentication tests (tests/support/dns.py)
#   openssl: the local stack makes its CA and certificates with it (deploy/local/secure.bash)
#   postfix: the smarthost that bounces mail in the bounce tests (tests/support/postfix.py), run
#     as a private instance, and its smtp-sink and smtp-source: the bench's independent SMTP
#     ceiling and relay load (bench/upstreams.py); installed with debconf's "No configuration",
#     so no system MTA starts
#   Mail::DKIM: the independent DKIM verifier of the signing tests (tests/support/dkim_verify.pl)
#   chromium: the browser the console's tests drive through Playwright (tests/web/test_browser.py);
#             Debian's build, never one Playwright downloads
#   pg_ctlcluster: PostgreSQL, FerretDB's other backend (CT_STACK_FERRETDB_BACKEND=postgresql,
#     deploy/local/postgres.bash; the bench compares both); the stack runs a server of its own
#   curl: the stack's readiness probe of the schema registry (deploy/local/registry.bash)
APT_TOOLS := dnsmasq:dnsmasq-base openssl:openssl smtp-sink:postfix \
	Mail::DKIM::Verifier:libmail-dkim-perl chromium:chromium pg_ctlcluster:postgresql curl:curl

.PHONY: help install tools stack stack-down topics demo console test test-unit test-cluster lint bench clean

help: ## list the targets
	@printf 'Conversation Tracker: make TARGET\n\n'
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | \
		awk -F'\t' '{ printf "  %-12s %s\n", $$1, $$2 }'
	@printf '\nVariables: PYTHON=%s  PYTEST_ARGS (extra pytest arguments)\n' '$(PYTHON)'

install: $(STAMP) ## create .venv and install the project with its dev extra (fast when nothing changed)

$(VENV)/bin/python:
	@'$(PYTHON)' -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "error: Python >= 3.11 is needed; '$(PYTHON)' is $$('$(PYTHON)' -V 2>&1 || echo missing)." >&2; \
		echo "       Install python3.11 or run: make install PYTHON=/path/to/python3.11" >&2; exit 1; }
	'$(PYTHON)' -m venv $(VENV)

# Reinstalls only when pyproject.toml changes; the editable install picks up code changes itself.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -e '.[dev]'
	@touch $@

tools: ## install the system tools the tests need (Debian packages: see APT_TOOLS)
	@missing=(); for t in $(APT_TOOLS); do check="$${t%:*}"; pkg="$${t##*:}"; \
		if [[ "$$check" == *::* ]]; then perl -M"$$check" -e1 2>/dev/null || missing+=("$$pkg"); \
		else command -v "$$check" >/dev/null 2>&1 || [[ -x "/usr/sbin/$$check" ]] || missing+=("$$pkg"); fi; \
	done; \
	if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then :; \
	else missing+=(docker-compose); fi; \
	(( $${#missing[@]} )) || exit 0; \
	command -v apt-get >/dev/null || { \
		echo "error: install these Debian packages (or their equivalents): $${missing[*]}" >&2; exit 1; }; \
	echo "tools: installing $${missing[*]} with apt-get"; \
	if ! apt-cache policy "$${missing[@]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then \
		$(SUDO) apt-get update -q; fi; \
	if [[ " $${missing[*]} " == *" postfix "* ]]; then \
		echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections; fi; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$${missing[@]}"

stack: install tools ## start the local stack (Kafka, FerretDB, SMTP sink, Mailpit, DNS) on 127.0.0.1
	$(STACK) up

stack-down: ## stop the local stack (its data stays; `deploy/local/stack reset` deletes it)
	$(STACK) down

topics: install ## create the Kafka topics on the running stack
	$(VENV)/bin/ct topics create

demo: install stack ## run the end-to-end demo against the local stack
	$(VENV)/bin/ct demo

console: install stack ## the web console on the local stack's data: prints the URL and a one-time admin password
	$(VENV)/bin/ct console --user demo-admin

# pytest exits 5 when it collected no tests: a suite that tests nothing must not look green.
# The suite's stack includes the schema registry (built the first time, about a minute or two;
# tests/integration/test_bus_framings.py and test_registry_writing.py need it).
# The cluster fault test is the one heavy run left out (`make test-cluster`, before a change to
# the workers' delivery or the consumers lands): with it the suite took 31 minutes here.
test: install tools stack ## the whole suite against the local stack but the cluster test (PYTEST_ARGS=...)
	$(STACK) up registry
	@rc=0; $(VENV)/bin/pytest -m "not cluster" $(PYTEST_ARGS) || rc=$$?; \
	if [[ $$rc -eq 5 ]]; then echo "error: pytest collected no tests (exit 5); that is a failure" >&2; fi; \
	exit $$rc

# Not part of `make test` (it takes 6 to 11 minutes); on its own private three-broker cluster,
# FerretDB and sink (tests/faults/conftest.py).
test-cluster: install ## the fault test on a private 3-broker Kafka cluster alone (PYTEST_ARGS=...)
	$(VENV)/bin/pytest tests/faults/test_cluster.py -m cluster -s $(PYTEST_ARGS)

test-unit: install ## the domain and the services on in-memory ports, in seconds, no stack (PYTEST_ARGS=...)
	$(VENV)/bin/pytest tests/unit -q $(PYTEST_ARGS)

# And the published JSON Schema against order_status.avsc; with CT_SCHEMA_REGISTRY_URL set, the
# repository's schemas against what that registry holds (`ct schemas check`).
lint: install ## ruff, ruff format --check, mypy --strict, import layers, schemas (and the registry)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy && \
		$(VENV)/bin/lint-imports && $(VENV)/bin/ct schemas json-schema --check
	@if [[ -n "$${CT_SCHEMA_REGISTRY_URL:-}" ]]; then $(VENV)/bin/ct schemas check; fi

bench: install tools stack ## run the benchmarks against the local stack (dnsmasq serves the relay stage)
	$(VENV)/bin/python -m bench

clean: ## remove .venv and the caches in the checkout (the stack's data stays)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
