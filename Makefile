# Two commands: `make train` and `make test`. Both create .venv and install tf-meta first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Offline development machines of this project keep a prepared TFDS folder beside the
# checkout; elsewhere TFDS downloads omniglot into ~/tensorflow_datasets.
ifneq ($(wildcard ../shared/data/tfds/omniglot),)
export TFDS_DATA_DIR ?= $(abspath ../shared/data/tfds)
endif
TRAIN_FLAGS ?= --algo=protonet
# One pytest worker a core, each test file on one worker (its module fixtures, which
# train and export learners, built once); TEST_FLAGS= runs the suite in one process.
TEST_FLAGS ?= -n auto --dist loadfile

.PHONY: setup train test clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) train.py $(TRAIN_FLAGS)

test: setup
	$(PY) -m pytest -q $(TEST_FLAGS) tests

clean:
	rm -rf $(VENV) runs build *.egg-info
