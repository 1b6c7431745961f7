"""Every benchmark result carries its provenance, read before the run starts."""
from __future__ import annotations

import subprocess
import sys


def test_provenance_names_installed_versions_before_anything_is_imported() -> None:
    # a fresh interpreter: nothing but the harness imported, as when `taskology bench` starts
    code = ("import sys; from taskology.bench import provenance; v = provenance('x', True, None)['versions']; "
            "print(sorted(v), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, torch_imported = out.rsplit(" ", 1)
    assert torch_imported.strip() == "False"  # so the versions come from the installed packages
    for dist in ("numpy", "torch", "numba", "h5py", "dask", "distributed", "trimesh", "python"):
        assert f"'{dist}'" in names, out
