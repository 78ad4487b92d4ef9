"""The architecture, locked: imports go one way (core <- knowledge <- training, core <- connectors,
everything <- app), no module or sibling package imports itself back, and the core loads no
web server, bot library, index or tensor library when imported."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", REPO / "scripts" / "check_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module
    spec.loader.exec_module(module)
    return module


def test_imports_follow_the_layers_without_cycles():
    check = _checker()
    graph = check.build_graph(REPO)
    assert len(graph.modules) > 50  # the whole tree was read, not an empty folder
    assert check.layer_violations(graph) == []
    assert check.file_cycles(graph) == []
    assert check.package_cycles(graph) == []
    assert check.private_imports(graph) == []


def test_nothing_outside_the_app_layer_imports_it():
    check = _checker()
    graph = check.build_graph(REPO)
    importers = {a for a, targets in graph.edges.items() for b in targets if check.layer_of(b) == "app"}
    assert {check.layer_of(a) for a in importers} <= {"app"}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_a_lazy_cycle_a_layer_breach_and_a_package_cycle(tmp_path: Path):
    check = _checker()
    _write(tmp_path, {
        "botkit/__init__.py": "",
        "botkit/engine.py": "def f():\n    from botkit.store import X  # lazy, still a tie\n",
        "botkit/store.py": "from botkit import engine\nX = 1\n",
        "botkit/responders/__init__.py": "",
        "botkit/responders/base.py": "from botkit.generation.prompt import P\n",
        "botkit/generation/__init__.py": "",
        "botkit/generation/prompt.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                       "    from botkit.responders.base import R\nP = 1\n",
        "knowledge/__init__.py": "",
        "knowledge/base.py": "from training.registry import ModelRegistry\nfrom botkit.engine import _CONTROL\n",
        "training/__init__.py": "",
        "training/registry.py": "from knowledge import base\n",
        "connectors/__init__.py": "",
    })
    graph = check.build_graph(tmp_path)
    cycles = check.file_cycles(graph)
    assert ["botkit.engine", "botkit.store"] in cycles
    assert ["knowledge.base", "training.registry"] in cycles
    assert ["botkit.generation.prompt", "botkit.responders.base"] in cycles
    assert ["botkit.generation", "botkit.responders"] in check.package_cycles(graph)
    (breach,) = check.layer_violations(graph)
    assert "knowledge.base (knowledge) imports training.registry (training)" in breach
    (private,) = check.private_imports(graph)
    assert "imports the private _CONTROL of botkit.engine (core)" in private


def test_importing_the_core_loads_no_server_bot_index_or_tensor_library():
    code = """
import importlib, json, pkgutil, sys
import botkit
names = [m.name for m in pkgutil.walk_packages(botkit.__path__, "botkit.")
         if not (m.name.startswith(("botkit.app", "botkit.backends")) or m.name == "botkit.__main__")]
for name in names:
    importlib.import_module(name)
heavy = ["aiohttp", "telegram", "faiss", "torch", "transformers", "sentence_transformers", "prometheus_client",
         "asyncpg"]
print(json.dumps({"modules": len(names), "loaded": [h for h in heavy if h in sys.modules]}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["modules"] > 20
    assert result["loaded"] == []
