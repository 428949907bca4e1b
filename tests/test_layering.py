"""Imports go only down the package's levels (docs: STYLE section 2).

Each module has a rank ``(row, position)``. A module may import only modules of strictly
lower rank: every row above it, and within its row only the modules listed before it (the
arrows ``_deps -> backend -> _validation`` of the table). Modules written as one group in the
table (``kernels/{inputs,dense,activations,conv,pool}``) share a position and may not import one
another. Modules the table names but the package does not have yet are skipped; a module the
table does not place fails the first test until it is placed here.

Deviations from the table, with their reasons:

* ``io`` (row 7 in the table) sits in row 1: ``distill`` checkpoints through it, and it needs
  nothing above NumPy.
* ``_threads`` and ``_progress`` (not in the table) sit in row 0: they import nothing from the
  package.
* ``features`` shares the position of the layer rules in row 3 (the table sets it apart with a
  semicolon but gives no order).
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kernelkip"

# one inner list per row; a tuple is a group of peers sharing one position
LEVELS = [
    ["_threads", "_progress", "_deps", "backend", "_validation"],
    [("arch", "io"), "data.preprocess", "data.loaders", "data"],
    [("kernels._activations_numba", "kernels._activations_cupy"),
     ("kernels._conv_numba", "kernels._conv_cupy"), "_features_numba"],
    ["kernels.state",
     ("kernels.inputs", "kernels.dense", "kernels.activations", "kernels.pool", "features"),
     "kernels.conv", "kernels.recursion", "kernels"],
    [("krr", "losses")],
    [("objectives", "optim", "nets")],
    [("distill", "evaluate")],
    ["plot", ("parallel", "cli"), "__main__"],
]
RANK = {name: (row, pos)
        for row, entries in enumerate(LEVELS)
        for pos, entry in enumerate(entries)
        for name in (entry if isinstance(entry, tuple) else (entry,))}

# compiled-loop modules import only the guarded optional imports (STYLE section 2, row 2) and
# earlier loop modules (the conv loops reuse the activations' scalar dual kernels)
LOOP_MODULES_MAY_IMPORT = {"_deps"}


def _module_name(path):
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
MODULES.pop("")  # kernelkip/__init__.py re-exports everything: it may import from any level


def _resolve(target):
    """``target`` if it is a module of the package, else its package (``from x import name``
    names either a submodule or an attribute)."""
    return target if target in MODULES or target in RANK else target.rpartition(".")[0]


def imports_of(name):
    """The package modules that module ``name`` imports, anywhere in its body."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module == "kernelkip" or (node.module or "").startswith("kernelkip."):
                module = node.module[len("kernelkip."):] if node.module != "kernelkip" else ""
            else:
                continue
            for alias in node.names:
                found.add(_resolve(f"{module}.{alias.name}" if module else alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kernelkip."):
                    found.add(alias.name[len("kernelkip."):])
    found.discard("")
    found.discard(name)
    return found


def test_the_import_parser_sees_known_imports():
    """Guards the parser itself: recursion imports the state, a rule and the arch values."""
    assert {"arch", "backend", "kernels.state", "kernels.dense"} <= imports_of("kernels.recursion")
    assert imports_of("kernels.activations") >= {"kernels._activations_numba", "arch"}


def test_every_module_is_placed_in_a_level():
    unplaced = sorted(set(MODULES) - set(RANK))
    assert not unplaced, f"place these modules in LEVELS of tests/test_layering.py: {unplaced}"


def test_no_module_imports_from_its_own_level_or_above():
    violations = [f"{name} {RANK[name]} imports {target} {RANK.get(target)}"
                  for name in sorted(set(MODULES) & set(RANK))
                  for target in sorted(imports_of(name))
                  if target not in RANK or RANK[target] >= RANK[name]]
    assert not violations, "\n".join(violations)


def test_compiled_loop_modules_import_only_deps():
    loops = [name for name in MODULES if RANK.get(name, (None,))[0] == 2]
    assert loops, "no compiled-loop module found"
    bad = {name: sorted(t for t in imports_of(name) - LOOP_MODULES_MAY_IMPORT
                        if not (t in loops and RANK[t] < RANK[name])) for name in loops}
    assert not any(bad.values()), bad
