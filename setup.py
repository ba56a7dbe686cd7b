"""pip entry point for alpamayo_ros (the colcon route uses CMakeLists.txt directly).

`pip install --no-build-isolation .` runs the same CMakeLists.txt that `colcon build` runs (rosidl message
generation, the PyPI-wheel include fix in cmake/ros_wheels.cmake), then packs one wheel:

- the hand-written `alpamayo_ros` package plus the generated `alpamayo_ros.msg` module and its type-support
  extensions -> site-packages;
- everything else CMake installs (message libraries, ament index, share/alpamayo_ros/{launch,config,rviz,msg},
  lib/alpamayo_ros/planner_node) -> the environment prefix, the same layout as a colcon install space.
  The `ros-wheels-bootstrapper` already puts `$VIRTUAL_ENV/lib` on the library path, so nothing needs sourcing.

`--no-build-isolation` is required: the build uses the ROS wheels installed in the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Distribution, find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = "alpamayo_ros"
# Relative to ROOT: setuptools refuses absolute source paths in data_files.
CMAKE_BUILD = Path("build") / "cmake"
CMAKE_PREFIX = Path("build") / "cmake-install"


class BuildWithCMake(build_py):
    """build_py that also configures, builds and installs the CMake (rosidl) part into a staging prefix."""

    def run(self) -> None:
        super().run()
        self._cmake()
        site = self._staged_site_packages() / PACKAGE
        target = Path(self.build_lib) / PACKAGE
        for kind in ("msg", "srv"):
            shutil.copytree(site / kind, target / kind, dirs_exist_ok=True)
        for ext in site.glob(f"{PACKAGE}_s__rosidl_typesupport_*"):
            shutil.copy2(ext, target / ext.name)
        self.distribution.data_files.extend(self._prefix_data_files())

    def _cmake(self) -> None:
        build, prefix = ROOT / CMAKE_BUILD, ROOT / CMAKE_PREFIX
        if prefix.exists():
            shutil.rmtree(prefix)  # stale files from renamed messages must not reach the wheel
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build),
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if shutil.which("ninja") and not (build / "CMakeCache.txt").exists():
            configure += ["-G", "Ninja"]
        subprocess.run(configure, check=True)
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", str(build), "--parallel", jobs], check=True)
        subprocess.run(["cmake", "--install", str(build)], check=True)

    @staticmethod
    def _staged_site_packages() -> Path:
        rel = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
        staged = ROOT / CMAKE_PREFIX / rel
        if not (staged / PACKAGE / "msg").is_dir():
            # ament_cmake_python's PYTHON_INSTALL_DIR is lib/pythonX.Y/site-packages (Debian: dist-packages).
            staged = next((ROOT / CMAKE_PREFIX).glob(f"lib/python*/*-packages"))
        return staged

    def _prefix_data_files(self) -> list[tuple[str, list[str]]]:
        """Every staged file outside site-packages, grouped by directory relative to the prefix."""
        site = self._staged_site_packages()
        groups: dict[str, list[str]] = {}
        for path in sorted((ROOT / CMAKE_PREFIX).rglob("*")):
            if path.is_dir() or site in path.parents:
                continue
            rel_dir = path.parent.relative_to(ROOT / CMAKE_PREFIX)
            groups.setdefault(str(rel_dir), []).append(str(path.relative_to(ROOT)))
        return sorted(groups.items())


class BinaryDistribution(Distribution):
    """The wheel carries compiled type-support extensions, so it is platform specific."""

    def has_ext_modules(self) -> bool:
        return True


setup(
    name="alpamayo-ros",
    version="0.1.0",
    description="ROS 2 planner node for NVIDIA's Alpamayo-R1 driving model",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["assets/*/*", "assets/*/*/*"]},
    data_files=[],  # filled by BuildWithCMake once CMake has installed
    cmdclass={"build_py": BuildWithCMake},
    distclass=BinaryDistribution,
    entry_points={
        "console_scripts": [
            "alpamayo-planner = alpamayo_ros.ros.planner_node:main",
            "alpamayo-replay = alpamayo_ros.ros.replay:main",
            "alpamayo-make-bag = alpamayo_ros.sim.make_bag:main",
            "alpamayo-eval = alpamayo_ros.sim.evaluate:main",
            "alpamayo-demo = alpamayo_ros.sim.demo:main",
        ],
    },
)
