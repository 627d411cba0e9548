# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export MUJOCO_GL ?= disable

# The demo: a CPU-sized MR.Q on a real dm_control task, a few minutes on 2 cores.
DEMO_PRESET ?= mrq_small
DEMO_ENV    ?= dmc:cartpole-swingup
DEMO_STEPS  ?= 10000
DEMO_OUT    ?= runs/demo
# `make demo THREADS=1`: torch threads of the demo run (default: torch's choice, all cores)
THREADS     ?=

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# torch is pinned (constraints.txt) so pip takes the CPU wheel and never a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@echo "make install: installing mrsq and its pinned dependencies into $(VENV)/ (the first time downloads ~1 GB: several minutes)"
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -c constraints.txt -e ".[test]"
	@$(PY) -c "import mrsq.cli" && echo "make install: done; run .venv/bin/mrsq --help (or: source .venv/bin/activate)"
	touch $(STAMP)

demo: install
	@if [ -d $(DEMO_OUT) ]; then echo "make demo: replacing the previous demo run in $(DEMO_OUT)/"; fi
	@rm -rf $(DEMO_OUT)
	$(VENV)/bin/mrsq train $(DEMO_PRESET) --env $(DEMO_ENV) --steps $(DEMO_STEPS) --eval-every 2000 \
		--eval-episodes 5 --out $(DEMO_OUT) $(if $(THREADS),--threads $(THREADS))
	$(VENV)/bin/mrsq plot $(DEMO_OUT) --out $(DEMO_OUT)/curves.png
	@echo "Results: $(DEMO_OUT)/eval.csv (returns), $(DEMO_OUT)/curves.png (the curve), $(DEMO_OUT)/train.csv (losses, steps/s),"
	@echo "         $(DEMO_OUT)/spec.yaml (resolved spec), $(DEMO_OUT)/checkpoint.pt"
	@cat $(DEMO_OUT)/eval.csv

# `make test TEST_WORKERS=auto` on a bigger machine; 0 runs in one process (pytest -q as before).
# Files stay whole on one worker (--dist loadfile) so module fixtures are built once.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(VENV)/bin/mrsq bench train --preset mrq --env dmc:cheetah-run

clean:
	rm -rf $(VENV) runs .pytest_cache
