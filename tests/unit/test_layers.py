"""The import-layer contract: cvt_lab's modules form layers, each importing only its own and those below, with
no cycles; every import counts, those inside functions too. docs/architecture.md draws the picture.

Names kept at an old address for scripts (``cvt_lab.results.run_lock``, ``cvt_lab.config.register_configs``)
resolve through ``importlib`` in a module ``__getattr__``: they are no import of the module that keeps them; nor
are imports for annotations only (``if TYPE_CHECKING:``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SRC = REPO_ROOT / "src"

# Bottom to top. A module belongs to the most specific prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("models and checkpoint formats", (
        "cvt_lab", "cvt_lab.errors", "cvt_lab.exits", "cvt_lab.paths", "cvt_lab.outcomes", "cvt_lab.models",
        "cvt_lab.checkpoint",
        "cvt_lab.checkpoint.formats", "cvt_lab.checkpoint.hub", "cvt_lab.checkpoint.load", "cvt_lab.timm_registry",
        "cvt_lab.complexity", "cvt_lab.htr", "cvt_lab.htr.model", "cvt_lab.htr.charset")),
    ("data, module, config", (
        "cvt_lab.config", "cvt_lab.data", "cvt_lab.module", "cvt_lab.callbacks", "cvt_lab.loggers",
        "cvt_lab.htr.batching", "cvt_lab.htr.datamodule", "cvt_lab.htr.digit_lines", "cvt_lab.htr.folder",
        "cvt_lab.htr.module", "cvt_lab.htr.samples", "cvt_lab.htr.job")),
    ("run lifecycle", (
        "cvt_lab.results", "cvt_lab.identity", "cvt_lab.rundir", "cvt_lab.compose", "cvt_lab.building",
        "cvt_lab.modes", "cvt_lab.predict", "cvt_lab.job", "cvt_lab.train", "cvt_lab.htr.predict")),
    ("sweeps, plan, reports, exports", (
        "cvt_lab.sweep", "cvt_lab.plan", "cvt_lab.report", "cvt_lab.checkpoint.exports", "hydra_plugins",
        "cvt_lab.htr.export")),
    ("command lines", (
        "cvt_lab.__main__", "cvt_lab.plan.__main__", "cvt_lab.report.__main__", "cvt_lab.checkpoint.__main__",
        "cvt_lab.checkpoint.cli", "cvt_lab.complexity.__main__", "cvt_lab.prereg", "cvt_lab.htr.report")),
]


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted([*(SRC / "cvt_lab").rglob("*.py"), *(SRC / "hydra_plugins" / "cvt_lab_launcher").rglob("*.py")]):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> int:
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules ``path`` imports, wherever the import statement is (module level or in a function)."""
    tree = ast.parse(path.read_text())
    # not imports at run time: old names' aliases (a module __getattr__) and annotations (`if TYPE_CHECKING:`)
    lazy = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
            for n in ast.walk(f)}
    lazy |= {id(n) for f in tree.body if isinstance(f, ast.If) and "TYPE_CHECKING" in ast.unparse(f.test)
             for n in ast.walk(f)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports pkg.sub when that is a module, else a name of pkg
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c` of a name inside a module: that module
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports_of(p, known) - {m} for m, p in known.items()}


def test_every_import_points_to_its_own_layer_or_below():
    wrong = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
             for a, targets in graph().items() for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    # a package's modules import its __init__ implicitly; a cycle through those is Python's, not ours
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_contract_sees_imports_inside_functions(tmp_path):
    known = {"cvt_lab.a": tmp_path / "a.py", "cvt_lab.b": tmp_path / "b.py"}
    known["cvt_lab.a"].write_text("def f():\n    from cvt_lab.b import x\n    return x\n")
    assert imports_of(known["cvt_lab.a"], known) == {"cvt_lab.b"}


@pytest.mark.parametrize("old, new", [
    ("cvt_lab.results.run_lock", "cvt_lab.rundir.run_lock"),
    ("cvt_lab.results.mark_failed", "cvt_lab.rundir.mark_failed"),
    ("cvt_lab.results.OutputDirCheck", "cvt_lab.rundir.OutputDirCheck"),
    ("cvt_lab.results.identity_of", "cvt_lab.identity.identity_of"),
    ("cvt_lab.results.NOT_IDENTITY", "cvt_lab.identity.NOT_IDENTITY"),
    ("cvt_lab.config.register_configs", "cvt_lab.compose.register_configs"),
    ("cvt_lab.complexity.table2_markdown", "cvt_lab.report.table2.table2_markdown"),
    ("cvt_lab.checkpoint.export", "cvt_lab.checkpoint.exports.export"),
    ("cvt_lab.train.run", "cvt_lab.job.run"),
    ("cvt_lab.exits.BAD_INPUT", "cvt_lab.errors.EXIT_BAD_INPUT"),
])
def test_old_names_still_resolve(old, new):
    import importlib

    def resolve(dotted: str):
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)

    assert resolve(old) is resolve(new)
