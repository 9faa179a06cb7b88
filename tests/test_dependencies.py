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


def _imports(nodes) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"depth2img"}


def imported_top_level_modules(*, module_level_only: bool = False) -> set[str]:
    """Third-party modules the package imports; ``module_level_only``: only the imports that run when a
    module is imported (its top-level statements), not those inside functions."""
    names: set[str] = set()
    for path in (ROOT / "depth2img").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names |= _imports(tree.body if module_level_only else ast.walk(tree))
    return names


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {normalise(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in specs}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    """Runtime dependencies, or the optional `ray` extra (imported only inside functions, so the default
    install imports every module without it)."""
    declared_names, optional = declared(), declared("ray")
    distributions = packages_distributions()

    def missing(modules: set[str], allowed: set[str]) -> dict[str, list[str]]:
        return {module: distributions.get(module, [module]) for module in modules
                if not any(normalise(d) in allowed for d in distributions.get(module, [module]))}

    assert not missing(imported_top_level_modules(), declared_names | optional), "imported but not declared"
    at_import = missing(imported_top_level_modules(module_level_only=True), declared_names)
    assert not at_import, f"imported at module level but not in [project].dependencies: {at_import}"
