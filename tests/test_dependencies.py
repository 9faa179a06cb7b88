"""Every third-party module the library imports is a declared runtime dependency.

The test environment also holds the test extras (scikit-image pulls scipy, ...), which once hid a
missing runtime dependency until a fresh `pip install -e .` failed. This checks the source instead.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_top_level_modules() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "depth2img").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"depth2img"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared_names = {normalise(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in declared}
    distributions = packages_distributions()
    missing = {
        module: distributions.get(module, [module])
        for module in imported_top_level_modules()
        if not any(normalise(d) in declared_names for d in distributions.get(module, [module]))
    }
    assert not missing, f"imported but not in [project].dependencies: {missing}"
