# gradcourse: the two commands a learner needs are `make lab` and `make test`.
# Both set up .venv first, and both are idempotent: the install runs again only when
# pyproject.toml or requirements/constraints.txt changed since the last install.

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.gradcourse-installed

# Jupyter refuses to run as root unless told to; pass the flag only when we are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
LINT_PATHS := $(wildcard gradcourse tests benchmarks notebooks tools dashboard)
DASHBOARD := dashboard/dashboard.ipynb
DASHBOARD_PORT ?= 8866
# make dashboard: Voila listens on this machine only (localhost) and, by default, asks for no token:
# right for a laptop at the projector, but on a shared machine every local user could open it.
# SHARED=1 makes Voila generate a token (the link it prints carries it); DASHBOARD_TOKEN sets your
# own. Export DASHBOARD_TOKEN rather than typing it after `make`: a command line is visible to
# every user (ps), an environment is not; the recipe hands it to Voila as JUPYTER_TOKEN.
SHARED ?=
DASHBOARD_TOKEN ?=
export DASHBOARD_TOKEN
DASHBOARD_AUTH = $(if $(DASHBOARD_TOKEN),JUPYTER_TOKEN="$$DASHBOARD_TOKEN" ,)
DASHBOARD_FLAGS = $(if $(or $(DASHBOARD_TOKEN),$(SHARED)),--token,)
# make links: which branch the links open, and your JupyterHub's address for the nbgitpuller link.
BRANCH ?= main
HUB ?=

# Make sure the kernel is the venv's Python, whatever kernelspecs the user has elsewhere.
export JUPYTER_PREFER_ENV_PATH := 1

.PHONY: help venv lab test test-portable lint notebooks bench clean distclean student slides dashboard links

help:
	@echo "make lab        set up .venv and open the course in JupyterLab (notebooks/)"
	@echo "make test       set up .venv and run the whole test suite (ruff, pytest, nbval, browser)"
	@echo "make test-portable  the lessons and their tests again on torch's portable CPU kernels (CI runs it)"
	@echo "make notebooks  re-execute every notebook in place from a fresh kernel, in order"
	@echo "make bench      run the benchmarks (benchmarks/run_all.py)"
	@echo "make student    write the student notebooks (no solutions, no instructor notes) to student/"
	@echo "make slides     set the lessons' slide metadata from their cells (for Render as slides)"
	@echo "make dashboard  serve every explorer without code, with Voila (http://localhost:$(DASHBOARD_PORT))"
	@echo "SHARED=1 make dashboard  the same with a token, for a machine other people log in to"
	@echo "make links      print the Binder, dashboard and nbgitpuller links for this clone's git remote"
	@echo "make clean      remove caches and build files; make distclean also removes .venv"
	@echo "PY=python3.12 make lab   chooses the interpreter the venv is made from"
	@echo "TORCH=pypi make lab      takes PyPI's torch (default on Linux without a GPU: TORCH=cpu, the CPU build)"

$(BIN)/python:
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "gradcourse needs Python >= 3.10, $(PY) is " + sys.version.split()[0])'
	$(PY) -m venv $(VENV)

# Which torch build pip installs. On Linux, PyPI's torch 2.13.0 is a CUDA build that pulls
# gigabytes of nvidia-* packages; PyTorch's CPU wheel index (https://pytorch.org/get-started/locally/)
# serves a ~190 MB CPU build of the same version. TORCH=cpu (the default on Linux without an NVIDIA
# driver, i.e. no nvidia-smi) asks that index too, and pip prefers its 2.13.0+cpu; TORCH=pypi takes
# PyPI's default (CPU-only on macOS and Windows, CUDA on Linux). `make lab TORCH=pypi` overrides it.
UNAME_S := $(shell uname -s)
HAS_NVIDIA := $(shell command -v nvidia-smi 2>/dev/null)
TORCH ?= $(if $(and $(filter Linux,$(UNAME_S)),$(if $(HAS_NVIDIA),,linux-cpu)),cpu,pypi)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ifeq ($(TORCH),cpu)
TORCH_PIP_ARGS := --extra-index-url $(TORCH_CPU_INDEX) --retries 1
else ifeq ($(TORCH),pypi)
TORCH_PIP_ARGS :=
else
$(error TORCH must be cpu or pypi; got '$(TORCH)')
endif

# torch is named explicitly so that pip takes 2.13.0 and never a newer (CUDA) build. It is
# installed first, on its own, so that only this step looks at PyTorch's index; where that
# index cannot be reached, pip says so and takes 2.13.0 from wherever else it finds one.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) $(TORCH_PIP_ARGS) "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) "torch==2.13.0" -e ".[lab,dev]"
	@touch $@
	@echo "gradcourse: .venv is ready"

venv: $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)

# nbval collects the notebooks only because of --nbval-lax; the Python tests in tests/
# are collected as usual, and --doctest-modules runs every docstring example in gradcourse/ and tools/ (tests/ always holds tests, so pytest never ends on "no tests").
test: lint
	$(BIN)/python -m pytest tests gradcourse tools $(NOTEBOOKS) --doctest-modules \
		--nbval-lax --nbval-current-env --nbval-sanitize-with tests/sanitize.cfg \
		--nbval-cell-timeout=300 -p no:cacheprovider --durations=15

# Another CPU rounds differently: torch dispatches AVX-512, AVX2, NEON or portable kernels. This
# runs every lesson and the tests of trained results again on the portable ones (ATen's default
# kernels, MKL's compatible code path, oneDNN's SSE4.1), so that an assert whose margin only holds
# on this machine's kernels fails here rather than on a learner's laptop.
PORTABLE_KERNELS := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41
test-portable: $(STAMP)
	$(PORTABLE_KERNELS) $(BIN)/python -m pytest $(wildcard tests/test_lesson*.py) tests/test_exercises.py \
		tests/test_diagnose.py tests/test_train.py gradcourse $(NOTEBOOKS) --doctest-modules \
		--nbval-lax --nbval-current-env --nbval-sanitize-with tests/sanitize.cfg \
		--nbval-cell-timeout=300 -p no:cacheprovider --durations=10

notebooks: $(STAMP)
ifeq ($(NOTEBOOKS),)
	@echo "no notebooks in notebooks/ yet"
else
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=600 \
		--ExecutePreprocessor.kernel_name=python3 \
		--ExecutePreprocessor.store_widget_state=True \
		$(NOTEBOOKS)
endif

bench: $(STAMP)
	@if [ -f benchmarks/run_all.py ]; then \
		$(BIN)/python benchmarks/run_all.py; \
	else \
		echo "benchmarks/run_all.py does not exist yet"; \
	fi

# The student version is built, not committed: see README, "Teaching with the course".
student: $(STAMP)
	rm -rf student
	$(BIN)/python tools/student.py notebooks student

slides: $(STAMP)
	$(BIN)/python tools/slides.py

# A pre-heated kernel runs the page before anyone asks for it: it then opens in about 2 s, not 7.
dashboard: $(STAMP)
	$(DASHBOARD_AUTH)$(BIN)/voila $(DASHBOARD) --port=$(DASHBOARD_PORT) --theme=light --preheat_kernel=True \
		--pool_size=1 $(DASHBOARD_FLAGS)

# Standard library only: works before .venv exists.
links:
	@$(PY) tools/links.py --branch=$(BRANCH) $(if $(HUB),--hub=$(HUB),)

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name .ipynb_checkpoints -type d -exec rm -rf {} +
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache benchmarks/*.tmp

distclean: clean
	rm -rf $(VENV)
