"""The package re-exports every public geometry name lazily and correctly."""
from __future__ import annotations

import importlib

import taskology.geometry as geometry


def test_every_export_resolves_to_its_module_object() -> None:
    for name, module in geometry._EXPORTS.items():
        owner = importlib.import_module(f"taskology.geometry.{module}")
        assert getattr(geometry, name) is getattr(owner, name), name


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        geometry.no_such_kernel  # noqa: B018
    except AttributeError as exc:
        assert "no_such_kernel" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_submodule_named_like_a_function_stays_the_submodule() -> None:
    import types

    from taskology.geometry import kabsch

    assert isinstance(kabsch, types.ModuleType)
    assert callable(kabsch.kabsch)
