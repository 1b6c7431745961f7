"""The examples in the studies' docstrings run and print what they show (every module of every study)."""
from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parent
MODULES = sorted(p.relative_to(EXPERIMENTS).as_posix() for p in EXPERIMENTS.glob("*/*.py"))


@pytest.mark.parametrize("path", MODULES)
def test_docstring_examples(path: str) -> None:
    study, name = path[:-3].split("/")
    if str(EXPERIMENTS / study) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS / study))
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve() == EXPERIMENTS / path, f"{name} is another study's module too"
    lines = (module.__doc__ or "").splitlines()
    assert len(lines) >= 2 and lines[1].startswith("Run:"), f"{path}: the docstring's second line says how to run it"
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {path}"
