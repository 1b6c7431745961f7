"""environment.yml (conda) and constraints/cpu.txt stay consistent with pyproject.toml."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (pytest depends on tomli there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
#: pip distribution name -> conda-forge package name(s), where they differ.
CONDA_NAMES = {"torch": ["pytorch"]}
#: pip extras that are separate conda packages: (pip name, extra) -> conda names.
EXTRA_PACKAGES = {("dask", "distributed"): ["distributed"]}
#: entries of environment.yml that are not project dependencies.
TOOLING = {"python", "pip"}
_CONDA_SPEC = re.compile(r"^\s*(?P<name>[A-Za-z0-9_.-]+)\s*(?P<spec>(?:[<>=!~]=?\s*[^,\s]+\s*,?\s*)*)$")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _project_requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    return [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["dev"]]


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _parse_conda(entry: str) -> tuple[str, SpecifierSet]:
    """``"pytorch>=2.2"`` -> ("pytorch", SpecifierSet(">=2.2")); ``python=3.11`` means ``==3.11.*``."""
    match = _CONDA_SPEC.match(entry)
    assert match, f"cannot parse environment.yml entry {entry!r}"
    spec = match.group("spec").replace(" ", "").rstrip(",")
    if re.fullmatch(r"=[^=<>!~]+", spec):  # conda's single '=' is a prefix match
        spec = f"=={spec[1:]}.*"
    return canonicalize_name(match.group("name")), SpecifierSet(spec)


def _environment_packages() -> tuple[dict[str, SpecifierSet], dict[str, SpecifierSet], list[str]]:
    """(conda name -> spec, pip name -> spec, pip editable/URL lines)."""
    conda: dict[str, SpecifierSet] = {}
    pip: dict[str, SpecifierSet] = {}
    local: list[str] = []
    for entry in _environment()["dependencies"]:
        if isinstance(entry, dict):
            assert list(entry) == ["pip"], f"unexpected nested section {list(entry)} in environment.yml"
            for line in entry["pip"]:
                if line.startswith("-"):
                    local.append(line)
                else:
                    req = Requirement(line)
                    pip[canonicalize_name(req.name)] = req.specifier
        else:
            name, spec = _parse_conda(str(entry))
            assert name not in conda, f"{name} listed twice in environment.yml"
            conda[name] = spec
    return conda, pip, local


def _expected_packages() -> dict[str, tuple[str, SpecifierSet]]:
    """environment.yml name -> (pyproject requirement it comes from, the version bounds it must carry)."""
    expected: dict[str, tuple[str, SpecifierSet]] = {}
    for req in _project_requirements():
        name = canonicalize_name(req.name)
        for env_name in CONDA_NAMES.get(name, [name]):
            expected[env_name] = (str(req), req.specifier)
        for extra in req.extras:
            for env_name in EXTRA_PACKAGES.get((name, extra), []):
                expected[env_name] = (str(req), req.specifier)
    return expected


def test_every_pyproject_dependency_is_in_environment_yml_with_the_same_bounds() -> None:
    conda, pip, _ = _environment_packages()
    listed = {**conda, **pip}
    problems = []
    for env_name, (source, spec) in _expected_packages().items():
        if env_name not in listed:
            problems.append(f"{env_name} (from {source}) missing")
        elif listed[env_name] != spec:
            problems.append(f"{env_name}: environment.yml has '{listed[env_name]}', pyproject has '{spec}'")
    assert not problems, "; ".join(problems)


def test_every_environment_yml_package_comes_from_pyproject() -> None:
    conda, pip, _ = _environment_packages()
    expected = _expected_packages()
    extra = sorted(name for name in {**conda, **pip} if name not in expected and name not in TOOLING)
    assert not extra, f"environment.yml lists packages pyproject.toml does not: {extra}"
    both = sorted(set(conda) & set(pip))
    assert not both, f"listed both as conda and pip packages: {both}"


def test_environment_installs_the_project_editable_with_dev_extra_and_a_supported_python() -> None:
    env = _environment()
    conda, _, local = _environment_packages()
    assert local == ["-e .[dev]"]
    assert "conda-forge" in env["channels"]
    requires_python = SpecifierSet(_pyproject()["project"]["requires-python"])
    python_spec = conda["python"]
    pinned = Version(str(next(iter(python_spec))).lstrip("=").rstrip(".*") + ".0")
    assert pinned in requires_python, f"environment python {python_spec} outside requires-python {requires_python}"


def test_conda_spec_parser_on_known_answers() -> None:
    assert _parse_conda("pytorch>=2.2") == ("pytorch", SpecifierSet(">=2.2"))
    assert _parse_conda("dask >=2024.1,<2026") == ("dask", SpecifierSet(">=2024.1,<2026"))
    assert _parse_conda("python=3.11") == ("python", SpecifierSet("==3.11.*"))
    assert _parse_conda("pip") == ("pip", SpecifierSet(""))


@pytest.mark.parametrize("mutation, complaint", [
    (lambda text: text.replace("  - numba>=0.59\n", ""), "numba"),
    (lambda text: text.replace("pydantic>=2.5", "pydantic>=2.4"), "pydantic"),
    (lambda text: text.replace("  - kornia>=0.7\n", "  - kornia>=0.7\n  - opencv\n"), "opencv"),
])
def test_consistency_checks_catch_a_drifted_environment(monkeypatch: pytest.MonkeyPatch, mutation, complaint) -> None:
    """Fault injection: the checks above fail on a drifted copy of environment.yml."""
    drifted = mutation((ROOT / "environment.yml").read_text())
    monkeypatch.setattr(sys.modules[__name__], "_environment", lambda: yaml.safe_load(drifted))
    with pytest.raises(AssertionError, match=complaint):
        test_every_pyproject_dependency_is_in_environment_yml_with_the_same_bounds()
        test_every_environment_yml_package_comes_from_pyproject()


def test_cpu_constraint_pins_an_exact_torch_that_pyproject_allows() -> None:
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "constraints/cpu.txt").read_text().splitlines()]
    torch_lines = [Requirement(line) for line in lines if line and canonicalize_name(Requirement(line).name) == "torch"]
    assert len(torch_lines) == 1, f"expected one torch line in constraints/cpu.txt, found {len(torch_lines)}"
    (pin,) = torch_lines[0].specifier
    assert pin.operator == "==" and "*" not in pin.version, f"torch is not pinned exactly: {pin}"
    allowed = next(req.specifier for req in _project_requirements() if canonicalize_name(req.name) == "torch")
    assert Version(pin.version) in allowed, f"constraints/cpu.txt torch {pin.version} outside pyproject's {allowed}"
