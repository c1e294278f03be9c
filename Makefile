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

.PHONY: setup demo test bench clean distclean env

setup: $(STAMPS)/interfaces

$(STAMPS)/venv: requirements.txt constraints.txt
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	@touch $@

$(STAMPS)/interfaces: $(STAMPS)/venv $(INTERFACE_SOURCES)
	@echo "building ROS interfaces (msg/ srv/ action/) into $(VENV)"
	@bash tools/build_interfaces.sh $(VENV) $(BUILD)
	@touch $@

demo: setup
	$(PY) -m selfsup_perception.cli.demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/sim_camera_rate.py

env:
	@echo "export PYTHONPATH=$(CURDIR) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOCALHOST_ONLY=1 ROS_DOMAIN_ID=$(ROS_DOMAIN_ID) RMW_IMPLEMENTATION=rmw_fastrtps_cpp; source $(VENV)/bin/activate"

clean:
	rm -rf build $(STAMPS)

distclean: clean
	rm -rf $(VENV) data
