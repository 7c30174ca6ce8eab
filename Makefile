# zeroshot — the two commands of the README, plus helpers.
# torch is pinned first so pip takes the local CPU build instead of the CUDA one.
PY ?= python3
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install install-test demo test bench

install:
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e .

install-test:
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,ray]"

demo: install
	zeroshot generate "a red circle on a blue striped background" --method t2v-zero --out out/demo.mp4

test: install-test
	$(PY) -m pytest

bench:
	$(PY) bench/t2v_zero_vs_diffusers.py
