"""The layers of the package, read from its imports: no import cycle between its parts, no import from a lower layer
to a higher one, and the pure model without Lightning (issue 25; the README's "Layers" says the same in words)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict

from conftest import ROOT

PACKAGE = ROOT / "src" / "vaelab"
#: vaelab's parts from the lowest layer up: a part may import its own layer's modules and any below, never above
LAYERS = (
    ("errors",),
    ("rules", "record", "trust"),
    ("models",),
    ("data",),
    ("metrics",),
    ("training",),
    ("loggers", "loggers_mlflow"),
    ("callbacks",),
    ("dashboard",),
    ("tasks",),
    ("reports",),
    ("api", "cli", "explorer", "vaelab"),
)
LAYER = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """``vaelab.models.nets`` → ``models``; ``vaelab`` itself (its ``__init__``) → ``vaelab``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "vaelab"


def import_edges() -> dict[tuple[str, str], list[str]]:
    """``{(importing part, imported part): [where]}`` for every import of a vaelab module by another part, also
    those inside functions (they count: a lazy import is still a dependency)."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for file in PACKAGE.rglob("*.py"):
        module = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "vaelab":  # from vaelab import rules
                names = [f"vaelab.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                names = []
            for name in names:
                if name == "vaelab" or name.startswith("vaelab."):
                    here, there = part_of(module), part_of(name)
                    if here != there:
                        edges[(here, there)].append(f"{file.relative_to(ROOT)}:{node.lineno}")
    return edges


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts - {"conf"} <= set(LAYER), f"parts without a layer: {sorted(parts - {'conf'} - set(LAYER))}"


def test_no_import_goes_up_a_layer():
    upward = {f"{a} -> {b}: {where[0]}" for (a, b), where in import_edges().items() if LAYER[a] < LAYER[b]}
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_parts_or_modules():
    edges = import_edges()
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    cycles = [f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and a in graph.get(b, ())]
    assert not cycles, f"parts importing each other: {cycles}"


def test_the_dashboard_budget_and_views_do_not_import_each_other():
    """The budget finds the views by their ``budgeted`` attribute, not by importing them (the old cycle)."""
    tree = ast.parse((PACKAGE / "dashboard" / "budget.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("vaelab.dashboard")}, imported


def test_the_pure_model_and_vaelab_load_import_no_lightning():
    code = ("import sys, vaelab.models, vaelab.models.checkpoint, vaelab.trust; vaelab.load; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
