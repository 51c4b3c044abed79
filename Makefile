# casseg_ros — one-command set-up, demo and tests. Everything goes into .venv (no system changes).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
STAMP  := $(VENV)/.casseg-setup-done
# Every rclpy process started from here stays on loopback (see README, "DDS on loopback").
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_loopback.xml
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt setup.py scripts/build_interfaces.sh $(wildcard interfaces/casseg_msgs/msg/*.msg) interfaces/casseg_msgs/CMakeLists.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	bash scripts/build_interfaces.sh $(VENV)
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider test

demo: setup
	$(PY) -m casseg_ros.demo --out out/demo

bench: setup
	$(PY) bench/model.py
	$(PY) bench/backends.py
	$(PY) bench/node.py

clean:
	rm -rf build out
