"""hbtui.attach is its own room: it may use hbtui.engine modules, never Textual or the
console (``hbtui run`` must start fast and work on a headless box)."""

from __future__ import annotations

import subprocess
import sys

import grimp


def test_attach_never_imports_textual_or_the_console() -> None:
    g = grimp.build_graph("hbtui", "textual", exclude_type_checking_imports=True)
    for mod in sorted(m for m in g.modules if m.startswith("hbtui.attach")):
        for bad in ("textual", "hbtui.console", "hbtui.cli"):
            chain = g.find_shortest_chain(importer=mod, imported=bad)
            assert chain is None, f"{mod} imports {bad}: {chain}"


def test_hbtui_run_loads_no_textual() -> None:
    code = "import sys, hbtui.attach.launcher; print('textual' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr
