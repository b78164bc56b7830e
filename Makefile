# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ppml-installed
EXTRAS ?= test,postgres,spark,ml,dl,fl
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

# The benchmarks also need the bench extra (tpchgen-cli), installed over the venv's own extras.
BENCH_STAMP := $(VENV)/.ppml-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS),bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(PY) bench/crypto.py
	$(PY) bench/kms.py
	$(PY) bench/attestation.py
	$(PY) bench/simple_query.py
	$(PY) bench/codec.py
	$(PY) bench/pme.py
	$(PY) bench/agent.py
	$(PY) bench/ml.py
	$(PY) bench/serving.py
	$(PY) bench/dl.py
	$(PY) bench/he.py
	$(PY) bench/psi.py
	$(PY) bench/fl.py
	$(PY) bench/vfl.py
	$(PY) bench/fgboost.py
	$(PY) bench/tpch.py --scale-factor 1

clean:
	rm -rf $(VENV) .demo .pytest_cache build src/*.egg-info src/ppml/spark/jars
