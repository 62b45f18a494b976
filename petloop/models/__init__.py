"""Model sets shipped with petloop, and where a command finds its model set.

``phantom/`` is package data: it is found from any working directory, in a source checkout and in
an installed wheel alike. This module imports nothing heavy, so options are resolved before
torch loads.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"
#: The bundled model set (trained on phantoms only: not for patients).
BUNDLED_MODEL_SET = Path(__file__).resolve().parent / "phantom"


class ModelSetNotFound(ValueError):
    """No model set where one was asked for; the message names where petloop looked."""


def find_model_set(given: str | Path | None = None, *, environment: str | None = None) -> Path:
    """The model set to use: ``given`` (a ``--models`` option), else ``environment`` (the
    ``PETLOOP_MODELS`` variable, which the CLI reads), else :data:`BUNDLED_MODEL_SET`."""
    for origin, folder in (("--models", given), ("PETLOOP_MODELS", environment)):
        if folder:
            if not (Path(folder) / MANIFEST).is_file():
                raise ModelSetNotFound(f"{origin} {folder}: no model set here (no {MANIFEST})")
            return Path(folder)
    if not (BUNDLED_MODEL_SET / MANIFEST).is_file():
        raise ModelSetNotFound(
            f"no --models given, PETLOOP_MODELS not set, and the bundled model set is missing: "
            f"looked for {BUNDLED_MODEL_SET / MANIFEST}")
    return BUNDLED_MODEL_SET
