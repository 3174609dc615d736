# `make demo` and `make test` each set up what they need: system packages, the venv, installs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
STAMP_F5 := $(VENV)/.installed-f5

.PHONY: demo test sysdeps venv clean

sysdeps:
	@sh scripts/install-system-deps.sh

$(STAMP): pyproject.toml constraints.txt contrib/system-packages.txt
	@sh scripts/install-system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[test]'
	@touch $@

# the neural engines' stacks (torch, torchaudio, f5-tts, indextts2-inference): only the tests and
# the benchmarks need them
$(STAMP_F5): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[test,f5,indextts]'
	@touch $@

venv: $(STAMP_F5)

demo: $(STAMP)
	@rm -rf out/demo out/demo-state
	$(VENV)/bin/ishowttsd --config config/demo.toml --socket out/demo.sock --exit-when-done --summary
	@echo "WAVs and the log of what was said: out/demo/ (spoken.jsonl)"

test: $(STAMP_F5)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out build dist *.egg-info
