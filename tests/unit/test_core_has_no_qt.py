"""app/core must never import Qt: checked by walking every import statement in it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "app" / "core"
QT = ("PySide6", "shiboken6", "PyQt5", "PyQt6", "PySide2")


def test_core_sources_import_no_qt():
    offenders = []
    files = list(CORE.rglob("*.py"))
    assert len(files) > 3
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in QT]
    assert not offenders


def test_importing_all_of_core_loads_no_qt():
    mods = [
        ".".join(p.relative_to(CORE.parents[1]).with_suffix("").parts)
        for p in CORE.rglob("*.py")
        if p.name != "__init__.py" and "host" not in p.name
    ]
    code = "import importlib, sys\n"
    code += "".join(f"importlib.import_module({m!r})\n" for m in mods)
    code += f"bad = [m for m in sys.modules if m.split('.')[0] in {QT!r}]\n"
    code += "assert not bad, bad\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
