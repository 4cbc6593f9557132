# Two commands set everything up: `make run` and `make test`. See README.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

export CRM_LANDING_DIR ?= data/landing
export CRM_WAREHOUSE ?= data/warehouse.duckdb
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
UI_PORT ?= 3000
# Test modules run on this many processes (pytest-xdist; a module's tests stay on one).
TEST_WORKERS ?= 2

.PHONY: install run test ui bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(UV) pip install --quiet --python $(PY) --compile-bytecode --require-hashes -r requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	$(PY) -m compileall -q crm_pipeline crm_pipeline_tests
	rm -f $(VENV)/.installed-*
	touch $@

$(DAGSTER_HOME)/dagster.yaml: crm_pipeline/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	test -f $@ || cp $< $@

# Demo data only in the default landing zone, when it is not there yet and no other shop
# database is named: a CRM_LANDING_DIR that names no folder is a mistyped path, not a request
# for demo data in the warehouse it names. (Empty settings mean the defaults, as in the CLI.)
run: install
	@landing="$${CRM_LANDING_DIR:-data/landing}"; \
	if [ -z "$$CRM_SHOP_URL" ] && [ ! -d "$$landing" ]; then \
		if [ "$$(realpath -m "$$landing")" = "$$(realpath -m data/landing)" ]; then \
			$(VENV)/bin/crm-pipeline generate --out "$$landing"; \
		else \
			echo "CRM_LANDING_DIR names $$landing, which is no folder: correct the path," \
				"or unset CRM_LANDING_DIR to run on demo data in data/landing" \
				"(.venv/bin/crm-pipeline generate --out DIR writes demo data anywhere)." >&2; \
			exit 2; \
		fi; \
	fi
	@warehouse="$${CRM_WAREHOUSE:-data/warehouse.duckdb}"; \
	$(VENV)/bin/crm-pipeline materialize --dictionary "$$(dirname "$$warehouse")/data_dictionary.md" --summary

test: install
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

bench: install
	$(VENV)/bin/crm-pipeline bench --customers $${CUSTOMERS:-100000}

# Re-resolve the pinned dependencies after editing pyproject.toml.
lock: install
	$(UV) pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 -o requirements.lock --quiet

clean:
	rm -rf $(VENV) data/landing data/landing_ground_truth data/warehouse.duckdb* \
		data/published.duckdb* data/report.html data/data_dictionary.md data/dagster_home data/bench
