# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ppml-installed
EXTRAS ?= test,postgres,spark,ml,dl,fl,deploy
ROWS   ?= 1000000

FLOWER_VENV ?= .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.ppml-flower-ready

CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.ppml-checkov-$(CHECKOV_VERSION)

.PHONY: demo test bench venv flower-venv checkov-venv clean

venv: $(STAMP)

# Flower pins protobuf/cryptography/FastAPI below ppml's: it gets its own venv (docs/fl.md).
flower-venv: $(FLOWER_STAMP)

$(FLOWER_STAMP): $(STAMP)
	$(VENV)/bin/ppml fl flower-env --path $(FLOWER_VENV)

# checkov (the policy scanner tests/test_kustomize.py runs on the Kubernetes manifests) pins packaging,
# boto3 and networkx below ppml's venv: it gets its own (~35 s to install; docs/deploy-kubernetes.md).
checkov-venv: $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ppml needs Python 3.11+"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	$(VENV)/bin/ppml jvm build
	@touch $@

demo: venv flower-venv
	$(VENV)/bin/ppml demo --workdir .demo --rows $(ROWS)

test: venv flower-venv checkov-venv
	PPML_FLOWER_VENV=$(abspath $(FLOWER_VENV)) PPML_CHECKOV_VENV=$(abspath $(CHECKOV_VENV)) $(PY) -m pytest $(PYTEST_ARGS)

# The benchmarks also need the bench extra (tpchgen-cli), installed over the venv's own extras.
BENCH_STAMP := $(VENV)/.ppml-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS),bench]'
	@touch $@

bench: $(BENCH_STAMP) flower-venv
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
	PPML_FLOWER_VENV=$(abspath $(FLOWER_VENV)) $(PY) bench/flower.py
	$(PY) bench/vfl.py
	$(PY) bench/fgboost.py
	$(PY) bench/tpch.py --scale-factor 1

clean:
	rm -rf $(VENV) $(FLOWER_VENV) $(CHECKOV_VENV) .demo .pytest_cache build src/*.egg-info src/ppml/spark/jars
