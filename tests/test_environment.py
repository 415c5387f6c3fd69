"""The two install routes (pip via pyproject.toml, conda via environment.yml) list the same pins;
`import rlhf_mini` is light and reaches every submodule."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.version import Version

import rlhf_mini

ROOT = Path(__file__).resolve().parent.parent


def _normalise(spec: str) -> str:
    return re.sub(r"\s+", "", spec.split(";")[0]).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_specs = {_normalise(s) for s in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    start = env_lines.index("      - pip:") if "      - pip:" in env_lines else None
    assert start is None  # the pip block is indented under "  - pip:"
    conda_specs = set()
    in_pip = False
    for line in env_lines:
        if line.strip() == "- pip:":
            in_pip = True
            continue
        if in_pip and line.strip().startswith("- "):
            item = line.strip()[2:]
            if not item.startswith("-e"):
                conda_specs.add(_normalise(item))
    assert conda_specs == pip_specs


def test_required_dependencies_are_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~;\[]", s)[0].strip().lower(): s for s in project["dependencies"]}
    for required in ["torch", "transformers", "datasets", "numpy", "matplotlib", "jupyterlab",
                     "ipywidgets", "nbval", "tqdm", "pytest"]:
        assert required in names, required
        assert "<" in names[required] and ">=" in names[required], f"{required} needs a tested range"


def test_constraints_pin_every_dependency_inside_its_range():
    """``make`` installs with ``-c constraints.txt``: the tested versions, each allowed by pyproject."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt line {number}: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name in ("torch", "triton"):  # installed by the Makefile's TORCH_INSTALL, CPU or CUDA build
            assert name not in pins
            continue
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"


def test_package_import_is_light_and_names_its_submodules():
    """``import rlhf_mini`` loads no torch, yet ``rlhf_mini.losses`` (any submodule) works when named."""
    code = ("import sys, rlhf_mini; light = 'torch' not in sys.modules; "
            "loss = rlhf_mini.losses.bradley_terry_loss; print(light, loss.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "rlhf_mini.losses"]

    on_disk = {p.stem for p in (ROOT / "rlhf_mini").glob("*.py") if p.stem not in ("__init__", "__main__")}
    on_disk |= {p.parent.name for p in (ROOT / "rlhf_mini").glob("*/__init__.py")}
    assert set(rlhf_mini.SUBMODULES) == on_disk  # the list does not drift from the package
    assert set(rlhf_mini.SUBMODULES) <= set(dir(rlhf_mini))
    with pytest.raises(AttributeError, match="no attribute 'lossses'"):
        rlhf_mini.lossses  # noqa: B018


def test_oldest_pins_are_the_declared_lower_bounds():
    """`make test-oldest` must test the versions pyproject.toml promises to support, no newer."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lower = {}
    for spec in project["dependencies"]:
        name, floor = re.match(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", spec).groups()
        lower[name.lower()] = floor
    pins = [line.split("==") for line in (ROOT / "constraints-oldest.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert {name for name, _ in pins} == {"transformers", "tokenizers", "datasets"}
    for name, version in pins:
        assert Version(version) == Version(lower[name]), (
            f"constraints-oldest.txt pins {name}=={version}, but pyproject.toml's lower bound is "
            f">={lower[name]}: make the two agree")
