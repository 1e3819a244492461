"""How the code reads, checked: no function in livemind/ is longer than 100 lines (a longer one
does several things; split it where its parts have names)."""

import ast
from pathlib import Path

import livemind

LIMIT = 100


def long_functions(root: Path, limit: int = LIMIT) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_in_livemind_is_longer_than_100_lines():
    assert long_functions(Path(livemind.__file__).parent) == []


def test_the_check_finds_a_long_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("def f():\n" + "    x = 1\n" * 101 + "\n\ndef g():\n    return 1\n")
    assert long_functions(pkg) == ["pkg/m.py:1 f (102 lines)"]
