# `make demo` and `make test` do their own set-up (pip install of the package and
# its test/example extras into the current Python). PYTHON selects the interpreter.
PYTHON ?= python3
STAMP := .make-installed

.PHONY: setup demo test clean

$(STAMP): setup.py
	$(PYTHON) -m pip install -q -e ".[test,examples]"
	$(PYTHON) -c "import jboat, jittor"  # first import compiles Jittor's core once
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PYTHON) examples/l2_regularization.py

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

clean:
	rm -f $(STAMP)
