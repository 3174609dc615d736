# `make demo` and `make test` each set up what they need: system packages, the venv, installs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
STAMP_F5 := $(VENV)/.installed-f5
# the Triton server's environment: its Python backend stub links the system's libpython, so it is
# built from the system's python3 (a pyenv or other build of the same version fails at model load)
TRITON_VENV ?= .venv-triton
SYSTEM_PYTHON ?= /usr/bin/python3
STAMP_TRITON := $(TRITON_VENV)/.installed

.PHONY: demo test sysdeps venv triton-env clean

sysdeps:
	@sh scripts/install-system-deps.sh

$(STAMP): pyproject.toml constraints.txt contrib/system-packages.txt
	@sh scripts/install-system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[test]'
	@touch $@

# the neural engines' stacks (torch, torchaudio, f5-tts, indextts2-inference) and the Triton client:
# only the tests and the benchmarks need them
$(STAMP_F5): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[test,f5,indextts,triton]'
	@touch $@

# nvidia-pytriton's tritonserver (runs on CPU) and what our model needs (torch, f5-tts, this package)
$(STAMP_TRITON): pyproject.toml constraints.txt contrib/triton/constraints.txt contrib/system-packages.txt
	@sh scripts/install-system-deps.sh
	@test -x $(TRITON_VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip --disable-pip-version-check -q install -c constraints.txt \
		-c contrib/triton/constraints.txt nvidia-pytriton -e '.[f5]'
	@touch $@

triton-env: $(STAMP_TRITON)

venv: $(STAMP_F5)

demo: $(STAMP)
	@rm -rf out/demo out/demo-state
	$(VENV)/bin/ishowttsd --config config/demo.toml --socket out/demo.sock --exit-when-done --summary
	@echo "WAVs and the log of what was said: out/demo/ (spoken.jsonl)"

test: $(STAMP_F5) $(STAMP_TRITON)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(TRITON_VENV) out build dist *.egg-info
