"""``python -m taskology ...`` runs the ``taskology`` command (see :mod:`taskology.cli`)."""
from __future__ import annotations

from taskology.cli import main

if __name__ == "__main__":
    main()
