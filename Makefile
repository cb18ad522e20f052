# Set-up and the everyday commands. A fresh machine needs only `make train` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install train test lint tensorboard mlflow benchmark clean lock

# A virtual environment with vaelab (editable), its dev tools, MLflow, W&B and Gradio (logger=mlflow, logger=wandb,
# vaelab-explore: tested too), every package at the version of requirements/constraints.txt (the environment the
# suite last passed in); redone when either file changes. `make lock` writes that file anew from the current environment.
$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[dev,mlflow,wandb,explore,data]"
	touch $@

install: $(VENV)/.installed

# The default job: a VAE on the embedded digits data set, offline (logs/train/runs/<run>/).
train: install
	$(PY) src/train.py

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests scripts

tensorboard: install
	$(VENV)/bin/tensorboard --logdir logs

# the runs of logger=mlflow (docs/tracking.md)
mlflow: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///logs/mlflow.db --host 127.0.0.1

benchmark: install
	$(PY) scripts/benchmark.py

# the constraints file anew: what pyproject.toml asks for installed into the environment (pip keeps what is there
# where it fits), then every installed package at its version, vaelab itself left out. Run `make test` after it.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev,mlflow,wandb,explore,data]"
	{ echo "# Written by 'make lock' from the environment the test suite passed in; 'make install' and CI install"; \
	  echo "# with it (pip -c). pyproject.toml keeps the ranges for installing vaelab as a library."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^vaelab'; } > requirements/constraints.txt

clean:
	rm -rf logs/train logs/eval
