"""Imports only go down the layers of the package (a lower level never imports a higher one)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kernelkip"

# the order modules may import in: a module imports only from its own level or below, and within
# a level only from modules listed before it
LEVELS = [
    ["_deps", "_threads", "_progress", "backend", "_validation"],
    ["arch", "data.loaders", "data.preprocess", "data", "io"],   # io sits below the loop, which
    ["kernels._activations_numba"],                             # checkpoints
    ["kernels.state", "kernels.inputs", "kernels.dense", "kernels.activations",
     "kernels.recursion", "kernels"],
    ["krr", "losses"],
    ["objectives", "optim"],
    ["distill", "evaluate"],
    ["cli", "__main__"],
]
RANK = {name: (level, pos) for level, names in enumerate(LEVELS)
        for pos, name in enumerate(names)}


def _module_name(path):
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path, name):
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("kernelkip"):
                target = node.module[len("kernelkip."):] if node.module != "kernelkip" else ""
            else:
                continue
            for alias in node.names:  # "from . import io" names a module
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in RANK else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kernelkip."):
                    found.add(alias.name[len("kernelkip."):])
    return {t for t in found if t}


def test_every_module_is_placed_and_imports_only_downwards():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules.pop("")  # kernelkip/__init__.py re-exports everything
    assert len(modules) >= 15, sorted(modules)
    unplaced = sorted(set(modules) - set(RANK))
    assert not unplaced, f"place these modules in tests/test_layering.py LEVELS: {unplaced}"
    violations = []
    for name, path in modules.items():
        for target in _imports(path, name):
            if target not in RANK:
                violations.append(f"{name} imports unknown {target}")
            elif RANK[target] >= RANK[name] and target != name:
                violations.append(f"{name} {RANK[name]} imports {target} {RANK[target]}")
    assert not violations, "\n".join(violations)
