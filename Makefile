# Two entry points (see README): `make demo` and `make test`. Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

.PHONY: demo test bench clean
demo: $(VENV)/.installed  ## install, then run the default job (the bundled demo) end to end
	. $(VENV)/bin/activate && snakemake --cores $(CORES)

test: $(VENV)/.installed  ## install, then run the test suite (exit code 5, no tests, is a failure)
	. $(VENV)/bin/activate && python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf results data/demo .snakemake
