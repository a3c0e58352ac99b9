# pipe: the commands the README names. `make check` is what CI (.ci/run) runs.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= /var/tmp/pipe-target
export CARGO_BUILD_JOBS ?= 2
PIPE_VENV ?= /var/tmp/pipe-venv
export PIPE_PYTHON ?= $(PIPE_VENV)/bin/python
PIPE_LAKANA_VENV ?= /var/tmp/pipe-lakana
export PIPE_LAKANA_PYTHON ?= $(PIPE_LAKANA_VENV)/bin/python
PIPE_NODE ?= /var/tmp/pipe-node
export PIPE_AZURITE ?= $(PIPE_NODE)/node_modules/.bin/azurite-blob

.PHONY: check fmt-check clippy test arrow-check install-smoke venv node-tools pg-setup hms-jars bench run

## check: formatting, lints, one-Arrow check, every test (needs the venv and PostgreSQL: set up if missing)
check: venv node-tools pg-setup fmt-check clippy arrow-check test install-smoke

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

## test: unit, integration and end-to-end tests (the e2e ones read results back with python duckdb/pyarrow)
## (the Hive tests start one real metastore on first use, shared by all; stopped at the end)
test: venv node-tools hms-jars
	@status=0; \
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast || status=$$?; \
	else \
		cargo test --workspace --no-fail-fast || status=$$?; \
	fi; \
	bash tests/hms/stop-test-hms.sh; \
	exit $$status

## arrow-check: exactly one version of arrow in the build (docs/dependencies.md)
arrow-check:
	@majors=$$(cargo tree --workspace -e normal,build,dev --prefix none | grep -oE '^(arrow|arrow-[a-z]+|parquet) v[0-9]+' | awk '{print $$2}' | sort -u); \
	if [ "$$(echo "$$majors" | wc -l)" -ne 1 ]; then echo "more than one arrow major: $$majors"; cargo tree -i arrow-array; exit 1; fi; \
	echo "one arrow major: $$majors"

## install-smoke: `cargo install --path framework/cli` (the debug profile here, to reuse the test
## build) puts a `pipe` in $(PIPE_INSTALL)/bin that runs the main job from a clean directory
PIPE_INSTALL ?= /var/tmp/pipe-install
install-smoke:
	cargo install --locked --debug --force --quiet --path framework/cli --root $(PIPE_INSTALL)
	@tmp=$$(mktemp -d) && cp -r pipelines $$tmp/ && cd $$tmp && \
	$(PIPE_INSTALL)/bin/pipe run pipelines/orders.toml --json --no-progress > run.json && \
	grep -q '"rows_inserted": 5000' run.json && \
	$(PIPE_INSTALL)/bin/pipe load pipelines/data/orders.csv parquet://out/orders --json --no-progress > load.json && \
	grep -q '"rows_inserted": 5000' load.json && \
	echo "install-smoke: $$($(PIPE_INSTALL)/bin/pipe --version) loaded 5000 orders into DuckDB and into Parquet files" && \
	rm -rf $$tmp

## node-tools: Azurite (Azure Blob Storage's emulator) for the az:// Delta tests (installed once, reused)
node-tools: $(PIPE_NODE)/.ready

$(PIPE_NODE)/.ready: tests/node-tools.json
	mkdir -p $(PIPE_NODE)
	cp tests/node-tools.json $(PIPE_NODE)/package.json
	cd $(PIPE_NODE) && npm install --silent --no-audit --no-fund
	touch $@

## hms-jars: the Hive Metastore 2.3.9 jars (from PyPI's pyspark sdist, cached in /var/tmp) and its launcher
hms-jars:
	bash tests/hms/fetch-jars.sh

## pg-setup: local PostgreSQL up, and the password-auth rule the wrong-password test needs
pg-setup:
	bash tests/pg/setup.sh

## venv: the Python readers, and lakana-server in a venv of its own (created once, reused)
venv: $(PIPE_VENV)/.ready $(PIPE_LAKANA_VENV)/.ready

$(PIPE_LAKANA_VENV)/.ready: tests/requirements-lakana.txt
	python3 -m venv $(PIPE_LAKANA_VENV)
	$(PIPE_LAKANA_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements-lakana.txt
	touch $@

$(PIPE_VENV)/.ready: tests/requirements.txt
	python3 -m venv $(PIPE_VENV)
	$(PIPE_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

## bench: release build; CSV → DuckDB vs read_csv, Postgres → DuckDB vs psql COPY, Parquet → Iceberg vs DuckDB and pyiceberg, Parquet → Delta vs python deltalake, clustered vs round-robin merges and Iceberg compaction, the REST catalog, a Hive Metastore and an S3 warehouse against the SQL catalog, registering and relocating 10,000 files, Postgres → Parquet files vs psql COPY and DuckDB's postgres export, one backfill by 1, 2 and 4 `pipe worker`s vs one `pipe run` (not part of check)
bench: venv pg-setup hms-jars
	cargo build --release -p pipe-cli
	$(PIPE_PYTHON) tests/bench/bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/pg_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/iceberg_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/rest_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/hive_s3_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/delta_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/cluster_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/files_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/relocate_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/http_bench.py $(CARGO_TARGET_DIR)/release/pipe
	$(PIPE_PYTHON) tests/bench/workers_bench.py $(CARGO_TARGET_DIR)/release/pipe

## run: the main job on the embedded default
run:
	cargo run --release -p pipe-cli -- run pipelines/orders.toml
