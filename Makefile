# Set-up and the everyday commands. A fresh machine needs only `make train` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install train test lint tensorboard mlflow benchmark clean

# A virtual environment with vaelab (editable), its dev tools and MLflow (logger=mlflow, tested too); redone when
# pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev,mlflow]"
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

clean:
	rm -rf logs/train logs/eval
