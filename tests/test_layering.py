"""The package's layers, checked on the source: who may import whom, and where the environment
and the plotting backend are touched."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "petloop"

#: packages and what of petloop they may not import
FORBIDDEN = {
    "io": ("petloop.phantom", "petloop.nnunet", "petloop.inference", "petloop.cli",
           "petloop.server", "petloop.clicks", "petloop.metrics", "petloop.tracer"),
    "clicks": ("petloop.phantom", "petloop.nnunet", "petloop.inference", "petloop.cli",
               "petloop.server"),
    "metrics": ("petloop.phantom", "petloop.nnunet", "petloop.inference", "petloop.cli",
                "petloop.server"),
    "tracer": ("petloop.phantom", "petloop.nnunet", "petloop.inference", "petloop.cli",
               "petloop.server"),
    "nnunet": ("petloop.phantom", "petloop.inference", "petloop.cli", "petloop.server"),
    "inference": ("petloop.cli", "petloop.server"),
    "server": ("petloop.cli",),
    "phantom": ("petloop.nnunet", "petloop.inference", "petloop.cli", "petloop.server"),
}


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_layers_import_only_what_they_may():
    wrong = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for name in imports(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not wrong, "\n".join(wrong)


def _sets_or_reads_environment(path: Path) -> list[int]:
    """Lines that use ``os.environ`` or ``os.getenv``."""
    tree = ast.parse(path.read_text())
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "os" and node.attr in ("environ", "getenv", "putenv")]


def test_only_the_command_line_touches_the_environment():
    # nnunet/paths.py scopes nnU-Net's variables to a block and puts them back
    allowed = {PACKAGE / "nnunet" / "paths.py"}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "cli") in path.parents or path in allowed:
            continue
        wrong += [f"{path.relative_to(PACKAGE.parent)}:{n}"
                  for n in _sets_or_reads_environment(path)]
    assert not wrong, "os.environ outside petloop.cli: " + ", ".join(wrong)


def test_no_module_chooses_a_plotting_backend_or_uses_pyplot():
    wrong = [str(p.relative_to(PACKAGE.parent)) for p in sorted(PACKAGE.rglob("*.py"))
             if "matplotlib.pyplot" in imports(p) or "matplotlib.use(" in p.read_text()]
    assert not wrong, wrong


def test_nnunet_environment_is_put_back_after_the_block(tmp_path, monkeypatch):
    import os

    from petloop.nnunet.paths import EXT_TRAINERS, NnunetPaths

    monkeypatch.setenv("nnUNet_raw", "/before")
    monkeypatch.delenv("nnUNet_results", raising=False)
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    paths = NnunetPaths.under(tmp_path)
    with paths.activated():
        assert os.environ["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
        assert os.environ["nnUNet_results"] == str(tmp_path / "nnUNet_results")
        assert os.environ["nnUNet_extTrainer"] == str(EXT_TRAINERS)
    assert os.environ["nnUNet_raw"] == "/before"
    assert "nnUNet_results" not in os.environ and "nnUNet_extTrainer" not in os.environ
    assert paths.raw.is_dir() and paths.results.is_dir()
