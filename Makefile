# alpamayo_ros developer entry points. `make setup && make test` is all CI runs (.ci/run).
#
#   make setup                 .venv with ROS 2 Jazzy wheels, CPU torch, deps; builds + installs the messages
#   make setup ROS_DISTRO=kilted
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128   (CUDA torch on a GPU machine)
#   make test                  the whole pytest suite (unit + real-DDS integration), localhost-only DDS
#   make demo                  replay the sample bag through the planner node with the embedded small model

SHELL := /bin/bash
PYTHON ?= python3.11
ROS_DISTRO ?= jazzy
TORCH_INDEX ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps

# ROS traffic never leaves this machine; each run gets its own DDS domain (tests add the xdist worker index).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell $(PYTHON) -c 'import random; print(random.randrange(1, 80))')
# Run the source tree (the installed copy supplies the generated alpamayo_ros.msg, see alpamayo_ros/__init__.py).
export PYTHONPATH := $(CURDIR)
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

PKG_SOURCES := CMakeLists.txt setup.py pyproject.toml package.xml $(wildcard cmake/*.cmake msg/*.msg srv/*.srv scripts/*) \
	$(shell find alpamayo_ros launch config rviz -type f -not -path '*/__pycache__/*' 2>/dev/null)
TORCH_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: setup test test-unit test-integration demo clean

SAMPLE_BAG := out/sample_bag

setup: $(STAMPS)/package $(SAMPLE_BAG)/metadata.yaml

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps-$(ROS_DISTRO): $(STAMPS)/venv requirements/ros-$(ROS_DISTRO).txt requirements/python.txt
	$(PY) -m pip install -q $(TORCH_ARGS) "torch==2.13.0"
	$(PY) -m pip install -q -r requirements/ros-$(ROS_DISTRO).txt -r requirements/python.txt
	rm -f $(STAMPS)/deps-* && touch $@

$(STAMPS)/package: $(STAMPS)/deps-$(ROS_DISTRO) $(PKG_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps .
	$(PY) -c "from alpamayo_ros.msg import TrajectorySet, PlannerStatus; from alpamayo_ros.srv import Ask"
	touch $@

# A 15 s red-light scene, 4 JPEG cameras at 10 Hz (180x320), 50 Hz odometry, MCAP (~7 MB, ~8 s).
$(SAMPLE_BAG)/metadata.yaml: $(STAMPS)/package
	$(PY) -m alpamayo_ros.sim.make_bag $(SAMPLE_BAG) --overwrite

test: setup
	$(PY) -m pytest -n 2 --dist loadscope test

test-unit: setup
	$(PY) -m pytest -n 2 test/unit

test-integration: setup
	$(PY) -m pytest -n 2 --dist loadscope test/integration

# The sample bag through the real planner node (embedded small model): PNG per cycle, GIF, output bag, summary.
demo: setup
	$(PY) -m alpamayo_ros.sim.demo --bag $(SAMPLE_BAG) --out out/demo

clean:
	rm -rf build install log out
