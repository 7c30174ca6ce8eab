"""pyproject.toml declares what zeroshot imports, and zeroshot imports what it declares."""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zeroshot"

# Distributions whose import name is not the distribution name in lower case, - as _.
MODULE_OF = {
    "opencv-python-headless": "cv2",
    "pillow": "PIL",
}

# Declared but never imported by zeroshot: diffusers imports them at run time.
RUNTIME_ONLY = {
    "peft": "diffusers' load_lora_weights builds its LoRA layers with peft",
    "scipy": "scheduler='auto' takes a model's own scheduler; LMSDiscreteScheduler and the beta-sigma "
    "options of diffusers' schedulers need scipy",
}

# Extras that zeroshot itself does not import (tools for the tests).
TOOL_EXTRAS = ("test",)

# Standard-library modules that older supported Pythons lack (imported behind a fallback).
NEWER_STDLIB = {"tomllib"}  # 3.11; `tomli` on 3.10


def _name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement ("ray[default]>=2.9" -> "ray")."""
    return re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0).lower().replace("_", "-")


def declared() -> dict[str, str]:
    """Distribution -> top-level module, for every dependency and non-tool extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra not in TOOL_EXTRAS:
            requirements += items
    names = {_name(r) for r in requirements}
    return {name: MODULE_OF.get(name, name.replace("-", "_")) for name in names}


def _top_level_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports of one source file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports() -> dict[str, list[str]]:
    """Top-level third-party module -> the zeroshot files that import it."""
    found = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _top_level_imports(path):
            if name != "zeroshot" and name not in sys.stdlib_module_names and name not in NEWER_STDLIB:
                found[name].append(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_declared():
    modules = set(declared().values())
    undeclared = {name: files for name, files in third_party_imports().items() if name not in modules}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_distribution_is_imported():
    imported = third_party_imports()
    unused = [name for name, module in declared().items() if module not in imported and name not in RUNTIME_ONLY]
    assert not unused, f"declared in pyproject.toml but never imported by zeroshot: {unused}"


def test_runtime_only_list_is_current():
    modules = declared()
    imported = third_party_imports()
    for name in RUNTIME_ONLY:
        assert name in modules, f"{name} is listed as run-time only but not declared"
        assert modules[name] not in imported, f"zeroshot imports {name} now: drop it from RUNTIME_ONLY"


def test_declared_names_are_read():
    modules = declared()
    assert modules["opencv-python-headless"] == "cv2" and modules["tomli-w"] == "tomli_w"
    assert modules["imageio-ffmpeg"] == "imageio_ffmpeg" and modules["ray"] == "ray"
    assert "pytest" not in modules
