# `make demo` and `make test` do their own set-up (pip install of the package and
# its test/example extras into the current Python, then a local oneDNN for Jittor:
# found, or installed with apt-get as root, validated, else Jittor's built-in CPU
# kernels; never fails, see jboat/tools/onednn.py). PYTHON selects the interpreter;
# JBOAT_ONEDNN=0 skips the oneDNN step.
PYTHON ?= python3
# One stamp per interpreter environment (sys.prefix: each venv/virtualenv has its own),
# so a stamp left by another interpreter never skips the install into this one; and a
# stamp whose environment lost jboat (this checkout's) or Jittor is dropped (the venv
# was recreated at the same path, say).
PREFIX_ID := $(shell $(PYTHON) -c "import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:12])" 2>/dev/null)
STAMP := .make-installed-$(PREFIX_ID)
INSTALLED := $(shell $(PYTHON) -c "import importlib.util as u, os, sys; j = u.find_spec('jboat'); sys.exit(not (j and u.find_spec('jittor') and os.path.realpath(j.origin).startswith(os.path.realpath('jboat') + os.sep)))" 2>/dev/null && echo yes)
ifneq ($(INSTALLED),yes)
$(shell rm -f $(STAMP))
endif

.PHONY: setup onednn demo test bench clean

$(STAMP): setup.py
	$(PYTHON) -m pip install -q -e ".[test,examples]"
	bash tools/setup_mpi.sh  # OpenMPI for mpirun where apt-get can; never fails (JBOAT_SKIP_MPI=1 skips)
	$(PYTHON) jboat/tools/onednn.py setup  # compiles Jittor's core once, then oneDNN
	$(PYTHON) -c "import jboat, jittor"
	@touch $(STAMP)

setup: $(STAMP)

onednn:
	$(PYTHON) jboat/tools/onednn.py setup --revalidate

demo: $(STAMP)
	$(PYTHON) examples/l2_regularization.py

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

bench: $(STAMP)
	$(PYTHON) bench/bench_l2.py

clean:
	rm -f .make-installed .make-installed-*
