"""The layer rule, written once: every import of a talkbench module points down or sideways within
its own component, and the module graph has no cycle.

Imports inside functions count (they hide cycles just as well), so does `from pkg import module`.
There is no exceptions list: a new upward import fails here, and the fix is to move the code to
the layer where it belongs (ARCHITECTURE.md, "Layers").
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "protocols", "faces", "metrics", "baselines", "bench")

# (component, rank). A module belongs to the component of its longest matching prefix. It may
# import modules of its own component and of components of strictly lower rank.
COMPONENTS: dict[str, tuple[str, int]] = {
    "core": ("core", 0),
    "protocols": ("protocols", 0),  # YAML files and split lists; no code of its own
    "faces": ("faces", 1),  # face, landmark, pose and crop models
    "metrics": ("metrics", 2),
    "baselines": ("baselines", 2),
    "bench.protocol": ("data", 3),  # protocol files and the data they name
    "bench.data": ("data", 3),
    "bench": ("harness", 4),  # runner, scoring, results, report, experts, sanity, calibrate
    "bench.cli": ("cli", 5),
}


def component(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in COMPONENTS:
            return COMPONENTS[prefix]
    raise AssertionError(f"{module} is in no component of the layer rule")


def project_modules() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if name.endswith(".__init__"):
                name = name[: -len(".__init__")]
            mods[name] = path
    return mods


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that `name` imports anywhere in its source (resolved to existing modules)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for target in targets:
            if target.split(".")[0] not in PACKAGES:
                continue
            # the deepest existing module of the dotted name (`a.b.func` -> `a.b`)
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                out.add(".".join(parts))
    return out


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_import_points_down_or_within_its_component():
    bad = []
    for source, targets in sorted(graph().items()):
        comp, rank = component(source)
        for target in sorted(targets):
            tcomp, trank = component(target)
            if tcomp != comp and trank >= rank:
                bad.append(f"{source} ({comp}, layer {rank}) imports {target} ({tcomp}, layer {trank})")
    assert not bad, "imports against the layer rule:\n" + "\n".join(bad)


def test_the_module_graph_has_no_cycle():
    g = graph()
    # Parent packages are imported implicitly, so `a.b` -> `a` is an edge only when written.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_across_modules():
    bad = []
    for name, path in sorted(project_modules().items()):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{name} imports {node.module}.{alias.name}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a metric importing the runner is reported."""
    modules = {"metrics.fake": tmp_path / "fake.py", "bench.runner": tmp_path / "runner.py"}
    modules["metrics.fake"].write_text("def f():\n    from bench.runner import run\n")
    found = imports_of("metrics.fake", modules["metrics.fake"], modules)
    assert found == {"bench.runner"}
    assert component("bench.runner")[1] > component("metrics.fake")[1]
