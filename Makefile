# casseg_ros — one-command set-up, demo and tests. Everything goes into .venv (no system changes).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
STAMP  := $(VENV)/.casseg-setup-done
# Every rclpy process started from here stays on loopback (see README, "DDS on loopback").
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_loopback.xml
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test test-fast test-fast-reversed test-again demo bench clean

EDITABLE_INSTALL = $(PY) -m pip install --quiet --no-deps --no-build-isolation -e .

# The stamp says set-up ran once, not that nothing removed the editable install since (a
# `pip install` of this package elsewhere with the venv's pip uninstalls it first), so every
# `setup` checks it — from outside the checkout — and reinstalls it when it is gone or broken.
setup: $(STAMP)
	@(cd / && $(abspath $(PY)) $(CURDIR)/scripts/check_editable.py $(CURDIR)) || \
	  { echo "setup: reinstalling the editable install of casseg_ros"; $(EDITABLE_INSTALL); }

$(STAMP): requirements.txt constraints.txt setup.py scripts/build_interfaces.sh $(wildcard interfaces/*/msg/*.msg interfaces/*/srv/*.srv interfaces/*/CMakeLists.txt)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(EDITABLE_INSTALL)
	bash scripts/build_interfaces.sh $(VENV)
	touch $(STAMP)

# Test tiers: markers in pytest.ini. `test` is the whole suite (what CI runs); `test-fast` leaves out
# the tests that create a DDS participant (`ros`) or take more than ~1.5 s (`slow`): the tier
# keeps to about a minute (issue 18), measured with --junitxml per-test times on a fresh clone.
FAST := -m "not ros and not slow"

# --durations: the slowest tests named in every log, so a tier that creeps up shows where.
# Tests marked `own_process` (pytest.ini says why) run in a second pytest process after the rest.
test: setup
	$(PY) -m pytest -q -p no:cacheprovider --durations=20 -m "not own_process" test
	$(PY) -m pytest -q -p no:cacheprovider -m own_process test

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider $(FAST) test

# The fast tier run back to front: passes only if no test depends on state left by an earlier one.
test-fast-reversed: setup
	mkdir -p build
	$(PY) -m pytest -q -p no:cacheprovider $(FAST) --collect-only test | grep '::' | tac > build/fast-reversed.args
	$(PY) -m pytest -q -p no:cacheprovider @build/fast-reversed.args

# What can depend on timing, on the machine or on what ran before, once more: the fleet replay and
# every test that creates a DDS participant (`ros`). CI runs it after `test`, so a flaky result
# shows there rather than in a user's hands.
test-again: setup
	$(PY) -m pytest -q -p no:cacheprovider test/test_fleet.py
	$(PY) -m pytest -q -p no:cacheprovider -m ros test

demo: setup
	$(PY) -m casseg_ros.demo --out out/demo

bench: setup
	$(PY) bench/model.py
	$(PY) bench/backends.py
	$(PY) bench/node.py

clean:
	rm -rf build out
