"""Library functions stay short (the developers' guide: under about 60 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "califlow"
MAX_LINES = 60  # def line to last line, docstring included


def function_lengths() -> list[tuple[int, str]]:
    """(lines, "module.py:function") of every function and method under src/califlow, longest first."""
    rows = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(SRC)}:{node.name}"))
    return sorted(rows, reverse=True)


def test_no_library_function_is_over_60_lines():
    rows = function_lengths()
    assert len(rows) > 500  # the scan found the package
    long = [f"{name} ({n} lines)" for n, name in rows if n > MAX_LINES]
    assert not long, "split into named steps: " + ", ".join(long)


if __name__ == "__main__":
    for n, name in function_lengths()[:10]:
        print(n, name)
