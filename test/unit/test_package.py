"""Package metadata is consistent: package.xml vs imports, entry points, build files, CI commands."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "alpamayo_ros"

# Python import name -> requirements/python.txt distribution name.
DISTRIBUTION_OF = {"cv2": "opencv-python-headless", "yaml": "pyyaml", "PIL": "pillow"}
STDLIB = set(sys.stdlib_module_names)
ROS_PYTHON = {"rclpy", "ament_index_python", "rosidl_runtime_py", "builtin_interfaces", "rcl_interfaces"}


def _package_xml() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def _deps(root: ET.Element, *tags: str) -> set[str]:
    return {e.text.strip() for t in tags for e in root.iter(t)}


def _imports() -> set[str]:
    names: set[str] = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _setup_kwargs() -> dict[str, ast.expr]:
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: k.value for k in call.keywords}


def test_package_xml_is_format_3_with_valid_maintainer():
    root = _package_xml()
    assert root.attrib["format"] == "3"
    assert root.findtext("name") == "alpamayo_ros"
    maintainer = root.find("maintainer")
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", maintainer.attrib["email"])
    assert root.find("export/build_type").text == "ament_cmake"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"


def test_versions_agree():
    import alpamayo_ros

    version = _package_xml().findtext("version")
    assert ast.literal_eval(_setup_kwargs()["version"]) == version == alpamayo_ros.__version__


def test_every_ros_import_is_a_package_xml_dependency():
    ros_imports = {n for n in _imports() if n.endswith("_msgs") or n in ROS_PYTHON}
    declared = _deps(_package_xml(), "depend", "exec_depend")
    assert ros_imports, "the package should import ROS modules somewhere"
    assert ros_imports - {"ament_index_python"} <= declared, ros_imports - declared


def test_every_third_party_import_is_a_requirement():
    reqs = {
        re.split(r"[<>=\[ ]", line.strip())[0].lower()
        for line in (REPO / "requirements" / "python.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    ros_like = {n for n in _imports() if n.endswith("_msgs") or n in ROS_PYTHON}
    third_party = _imports() - STDLIB - ros_like - {"alpamayo_ros"}
    missing = {n for n in third_party if DISTRIBUTION_OF.get(n, n).lower().replace("_", "-") not in reqs}
    assert not missing, f"imported but not in requirements/python.txt: {sorted(missing)}"


def test_console_scripts_point_at_existing_functions():
    scripts = ast.literal_eval(_setup_kwargs()["entry_points"])["console_scripts"]
    assert scripts
    for line in scripts:
        name, target = (s.strip() for s in line.split("="))
        module, func = target.split(":")
        source = REPO / (module.replace(".", "/") + ".py")
        assert source.is_file(), f"{name}: {source} missing"
        defs = {n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert func in defs, f"{name}: {module} has no function {func}"


def test_cmake_lists_every_message_and_installed_script():
    cmake = (REPO / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"((?:msg|srv)/\w+\.(?:msg|srv))"', cmake))
    assert listed == {f"{p.parent.name}/{p.name}" for p in [*(REPO / "msg").glob("*.msg"), *(REPO / "srv").glob("*.srv")]}
    programs = re.search(r"install\(PROGRAMS([^)]*)DESTINATION", cmake).group(1).split()
    for program in programs:
        path = REPO / program
        assert path.is_file() and path.stat().st_mode & 0o111, f"{program} missing or not executable"


def test_launch_file_uses_installed_executables():
    launch = (REPO / "launch" / "planner.launch.py").read_text()
    executables = set(re.findall(r'package="alpamayo_ros",\s*executable="(\w+)"', launch))
    assert executables, "launch file starts no executable"
    assert executables <= {p.name for p in (REPO / "scripts").iterdir()}


def test_ci_runs_exactly_the_readme_commands():
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert ci == ["make setup", "make test"]
    readme = (REPO / "README.md").read_text()
    assert "make setup" in readme and "make test" in readme


def test_core_packages_do_not_import_ros():
    """model/, planner/ and sim/ scene code must import with rclpy unavailable."""
    code = (
        "import sys, pkgutil, importlib\n"
        "for m in ('rclpy', 'rosbags'): sys.modules[m] = None\n"
        "import alpamayo_ros.model, alpamayo_ros.planner\n"
        "for pkg in (alpamayo_ros.model, alpamayo_ros.planner):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_rviz_config_shows_the_planner_outputs():
    import yaml

    config = yaml.safe_load((REPO / "rviz" / "alpamayo.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert topics == {"/alpamayo_planner/debug/markers", "/alpamayo_planner/output/path",
                      "/alpamayo_planner/debug/overlay"}
    node = (PKG / "ros" / "planner_node.py").read_text()
    for topic in topics:
        assert f'"~/{topic.split("/", 2)[2]}"' in node, f"{topic} is not a topic of the planner node"
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "base_link"
