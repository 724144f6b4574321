# Two entry points (see README): `make demo` and `make test`. Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
# The tests run in this many processes (pytest-xdist), each test file whole in one of them; the
# session's demo run is made once and shared (tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	# OpenCV's headless contrib build over ptlflow's opencv-python, the same version: no libGL
	# needed, and TV-L1 flow (cv2.optflow) is there (README, "OpenCV on compute nodes")
	$(PY) -m pip install -q --force-reinstall --no-deps \
	  "opencv-contrib-python-headless==$$($(PY) -c 'from importlib.metadata import version; print(version("opencv-python"))')"
	touch $@

.PHONY: demo test test-quick test-cluster gpu-check clean
demo: $(VENV)/.installed  ## install, then run the default job (the bundled demo) end to end
	. $(VENV)/bin/activate && snakemake --cores $(CORES)

test: $(VENV)/.installed  ## install, then run the test suite (exit code 5, no tests, is a failure)
	. $(VENV)/bin/activate && python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-quick: $(VENV)/.installed  ## install, then the tests that run no workflow (-m "not slow")
	. $(VENV)/bin/activate && python -m pytest $(PYTEST_PARALLEL) -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The SLURM test installs SLURM (root, Debian packages) and writes /etc/slurm (kept and restored);
# outside CI it runs only through this target.
test-cluster: $(VENV)/.installed  ## install, then run the one-node SLURM test
	. $(VENV)/bin/activate && PIPELINE_TEST_SLURM=1 python -m pytest -m slurm $(PYTEST_ARGS)

# On a machine with a CUDA GPU: the GPU test tier, bench and bench-heads, one report (gpu-check.md).
gpu-check: $(VENV)/.installed  ## install, then check and measure the GPU paths (says so without a GPU)
	. $(VENV)/bin/activate && python -m pipeline.gpu_check --out gpu-check.md

clean:
	rm -rf results data/demo .snakemake
