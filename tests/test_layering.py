"""The package's layering, read from the source (every import, also those inside functions): no
import cycles between modules, and no module imports from a layer above its own.

Layers, bottom up: the data, losses, metrics, configs and parameter files; the networks
(`models`); what uses trained networks (inference, photos, quality estimation, evaluation,
export); training; the command-line apps. Training may use inference (its monitoring), never
the reverse; nothing but an app imports an app.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cqrnet_jax"

LAYERS = {  # module or package (dotted, below cqrnet_jax) -> layer
    "data": 0,
    "losses": 0,
    "metrics": 0,
    "config_base": 0,
    "errors": 0,
    "pretrained": 0,
    "devices": 0,
    "models": 1,
    "inference": 2,
    "photo": 2,
    "ensemble": 2,
    "quality": 2,
    "scoring": 2,
    "artifacts": 2,
    "train": 3,
    "apps": 4,
    "main": 4,
    "__main__": 4,
    "__init__": 0,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Modules of the package that `path` imports, anywhere in it (dotted, below cqrnet_jax)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
                targets = [f"cqrnet_jax.{module}" if module else "cqrnet_jax"]
            else:
                targets = [node.module or ""]
            # `from cqrnet_jax import pretrained` imports the submodule
            targets += [f"{targets[0]}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t.startswith("cqrnet_jax."):
                found.add(t.removeprefix("cqrnet_jax."))
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for target in _imports(path, name):
            # the longest known module the import names (an attribute import names its module)
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[0]
    assert top in LAYERS, f"{module}: add its package to LAYERS in {__file__}"
    return LAYERS[top]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_there_is_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{module} (layer {_layer(module)}) imports {dep} (layer {_layer(dep)})"
        for module, deps in sorted(_graph().items())
        for dep in sorted(deps)
        if _layer(dep) > _layer(module) and module not in ("__init__",)
    ]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize(
    "source, expect",
    [
        ("import cqrnet_jax.apps.cli", {"apps.cli"}),
        ("def f():\n    from cqrnet_jax.train.loop import x", {"train.loop", "train.loop.x"}),
        ("from cqrnet_jax import pretrained", {"", "pretrained"} - {""}),
        ("from .deblock import DeblockNet", {"models.deblock", "models.deblock.DeblockNet"}),
    ],
)
def test_imports_are_found_in_functions_and_relative_forms(tmp_path, source, expect):
    path = tmp_path / "mod.py"
    path.write_text(source)
    assert _imports(path, "models.mod") >= expect
