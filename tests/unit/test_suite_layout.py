"""The suite's own layout: a test module imports helpers only from its own folder or from tests/ (conftest,
hf_fixtures). pytest puts a folder on sys.path when it collects a file there, so an import across folders works
only in some orders (under xdist, in some workers) and fails in others."""

from __future__ import annotations

import ast

from conftest import REPO_ROOT

TESTS = REPO_ROOT / "tests"


def test_test_modules_import_helpers_from_their_own_folder_or_tests_root():
    shared = {p.stem for p in TESTS.glob("*.py")}
    wrong = []
    for path in sorted(TESTS.glob("*/*.py")):
        local = {p.stem for p in path.parent.glob("*.py")}
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                top = name.split(".")[0]
                if (top.startswith("test_") or top in {p.stem for p in TESTS.glob("*/*.py")}) \
                        and top not in local and top not in shared:
                    wrong.append(f"{path.relative_to(TESTS)} imports {name}")
    assert not wrong, "\n".join(wrong)
