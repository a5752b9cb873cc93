# Two commands a user needs: `make repro` (install, regenerate data/, dvc repro) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
PYTEST_FLAGS ?= -p no:hydra_pytest

.PHONY: install repro test bench clean-reports

$(VENV)/.installed: pyproject.toml constraints.txt
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,notebooks]'
	# TrackEval declares opencv-python, which would shadow opencv-python-headless: its other
	# requirements (numpy, scipy, pycocotools, pillow, matplotlib, tabulate) are ours already.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt trackeval
	touch $@

install: $(VENV)/.installed

repro: install
	instseg data sync
	dvc repro

test: install
	$(PY) -m pytest $(PYTEST_FLAGS)

bench: install
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_heads.py
	$(PY) benchmarks/bench_attention.py
	$(PY) benchmarks/bench_pcan_kernels.py
