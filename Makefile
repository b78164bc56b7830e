# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ppml-installed
EXTRAS ?= test,postgres,spark
ROWS   ?= 1000000

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ppml needs Python 3.11+"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	$(VENV)/bin/ppml jvm build
	@touch $@

demo: venv
	$(VENV)/bin/ppml demo --workdir .demo --rows $(ROWS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/crypto.py
	$(PY) bench/kms.py
	$(PY) bench/attestation.py
	$(PY) bench/simple_query.py
	$(PY) bench/codec.py
	$(PY) bench/pme.py
	$(PY) bench/agent.py

clean:
	rm -rf $(VENV) .demo .pytest_cache build src/*.egg-info
