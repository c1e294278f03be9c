# selfsup_perception: two commands on a bare machine.
#   make demo   set everything up, then run the self-supervised loop on the simulated world
#   make test   set everything up, then run the test suite
# Set-up is incremental: a second call with nothing changed starts within seconds.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
STAMPS := $(CURDIR)/.stamps
BUILD := $(CURDIR)/build/interfaces
PY := $(VENV)/bin/python
# colcon (from PyPI) lives in a venv of its own: the test suite builds the package with it in a
# workspace (under $TMPDIR) against the ROS 2 wheels of $(VENV), as `colcon build` on a robot.
COLCON_VENV ?= $(CURDIR)/.venv-colcon

# DDS traffic stays on this machine, on a domain of its own for each make run.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_LOCALHOST_ONLY := 1
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
ROS_DOMAIN_ID ?= $(shell $(PYTHON) -c 'import random; print(random.randint(1, 101))')
export ROS_DOMAIN_ID
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export PYTHONUNBUFFERED := 1
export OMP_NUM_THREADS ?= 2

INTERFACE_SOURCES := CMakeLists.txt package.xml cmake/wheel_compat.cmake $(wildcard msg/*.msg srv/*.srv action/*.action)

.PHONY: setup demo test bench clean distclean env colcon

setup: $(STAMPS)/interfaces $(STAMPS)/tf2_msgs

$(STAMPS)/venv: requirements.txt constraints.txt
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	@touch $@

$(STAMPS)/interfaces: $(STAMPS)/venv $(INTERFACE_SOURCES)
	@echo "building ROS interfaces (msg/ srv/ action/) into $(VENV)"
	@bash tools/build_interfaces.sh $(VENV) $(BUILD)
	@touch $@

# tf2_msgs (/tf, /tf_static) has no wheel: built from its message definitions (tools/tf2_msgs) with the
# same rosidl toolchain; skipped where tf2_msgs is importable already.
$(STAMPS)/tf2_msgs: $(STAMPS)/venv tools/build_tf2_msgs.sh $(wildcard tools/tf2_msgs/* tools/tf2_msgs/*/*)
	@echo "building tf2_msgs into $(VENV)"
	@bash tools/build_tf2_msgs.sh $(VENV) $(CURDIR)/build/tf2_msgs
	@touch $@

$(STAMPS)/colcon: tools/colcon-requirements.txt
	@mkdir -p $(STAMPS)
	@test -x $(COLCON_VENV)/bin/python || $(PYTHON) -m venv $(COLCON_VENV)
	$(COLCON_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tools/colcon-requirements.txt
	@touch $@

colcon: $(STAMPS)/colcon

demo: setup
	$(PY) -m selfsup_perception.cli.demo $(DEMO_ARGS)

test: setup $(STAMPS)/colcon
	SELFSUP_COLCON=$(COLCON_VENV)/bin/colcon $(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/sim_camera_rate.py

env:
	@echo "export PYTHONPATH=$(CURDIR) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOCALHOST_ONLY=1 ROS_DOMAIN_ID=$(ROS_DOMAIN_ID) RMW_IMPLEMENTATION=rmw_fastrtps_cpp; source $(VENV)/bin/activate"

clean:
	rm -rf build $(STAMPS)

distclean: clean
	rm -rf $(VENV) $(COLCON_VENV) data
