"""Fault injection on real processes and files: SIGKILL mid-promotion, a locked database, a full disk.

Each case prints its counts (``kills: N, ...``) so a run's figures can be quoted; run with ``-s``.
Cases covered elsewhere: a writer killed while it persists the FAISS index (test_crash.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_demo
from training.registry import ModelRegistry, hash_files

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

# --- 1. SIGKILL during registry writes ----------------------------------------------------------

PROMOTER = textwrap.dedent("""
    import itertools, os, sys, tempfile
    from pathlib import Path
    from training.registry import ModelRegistry, hash_files
    reg = ModelRegistry(Path(sys.argv[1]))
    print("ready", flush=True)
    for i in itertools.count(int(sys.argv[2])):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "adapter"
            src.mkdir()
            (src / "adapter_config.json").write_text('{"r": 8, "i": %d}' % i)
            (src / "adapter_model.safetensors").write_bytes(os.urandom(256 * 1024))
            mv = reg.register("lm", src, {"data_hash": hash_files(*sorted(src.iterdir()))})
        reg.promote("lm", mv.version, "loop", "child")
        if i % 3 == 2:
            reg.rollback("lm", "loop", "child")
        print(i, flush=True)
""")


def _artefact_complete(path: Path, data_hash: str) -> bool:
    # dot files are temp files of an interrupted metadata write: never loaded, removed by the next writer
    files = sorted(f for f in path.iterdir() if f.name != "metadata.json" and not f.name.startswith("."))
    return [f.name for f in files] == ["adapter_config.json", "adapter_model.safetensors"] and \
        hash_files(*files) == data_hash


def _check_read_view(reg: ModelRegistry, project: Path) -> int | None:
    """What a reader sees right after a kill: whole versions, one promoted, the CLI lists them."""
    versions = reg.list("lm")
    current = reg.current("lm")
    for mv in versions:
        assert _artefact_complete(mv.path, mv.metadata["data_hash"]), f"{mv.label} is incomplete"
    promoted = [mv.version for mv in versions if mv.status == "promoted"]
    assert promoted == ([current.version] if current else []), (promoted, current)
    out = subprocess.run([sys.executable, "-m", "botkit", "models", "list", "--kind", "lm", "--json",
                          "--project", str(project)], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [v["status"] for v in listed].count("promoted") == len(promoted)
    return current.version if current else None


def _raw_statuses(kdir: Path) -> dict[int, str]:
    return {int(d.name[1:]): json.loads((d / "metadata.json").read_text())["status"]
            for d in kdir.iterdir() if d.name.startswith("v0")}


def _check_on_disk(reg: ModelRegistry) -> None:
    """After the next writer ran: metadata, event log and pointer agree, nothing left behind."""
    kdir = reg.root / "lm"
    current = reg.current("lm")
    assert current is not None
    raw = _raw_statuses(kdir)
    assert [v for v, s in raw.items() if s == "promoted"] == [current.version], raw
    history = reg.history("lm")
    assert len(history) == len((kdir / "events.jsonl").read_text().splitlines())  # every line is an event
    assert {e.version for e in history if e.event == "register"} == set(raw)
    last = [e for e in history if e.event in ("promote", "rollback")][-1]
    assert last.version == current.version
    assert not list(kdir.glob(".*.tmp")) and not list(kdir.glob("v*/.*.tmp")), "a killed write left files"


def _new_version(reg: ModelRegistry, tmp: Path, name: str) -> int:
    src = tmp / name
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors").write_bytes(os.urandom(1024))
    return reg.register("lm", src, {"data_hash": hash_files(*sorted(src.iterdir()))}).version


@pytest.mark.slow
def test_sigkill_during_registry_promotions_leaves_a_consistent_registry(tmp_path: Path) -> None:
    project = copy_demo(tmp_path / "demo")
    from botkit.project import Project

    reg = ModelRegistry.for_project(Project.load(project))
    rng = random.Random(9)
    kills = consistent = torn = parent_promotions = 0
    for round_ in range(10):
        child = subprocess.Popen([sys.executable, "-c", PROMOTER, str(reg.root), str(round_ * 1000)],
                                 stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.stdout.readline()  # one whole iteration went through
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        raw = _raw_statuses(reg.root / "lm")
        pointer = reg.current("lm")
        torn += [v for v, s in raw.items() if s == "promoted"] != ([pointer.version] if pointer else [])

        serving = _check_read_view(reg, project)
        assert serving is not None
        # A later promotion works, and it puts the on-disk state right.
        reg.promote("lm", _new_version(reg, tmp_path, f"parent-{round_}"), "after the kill", "test")
        parent_promotions += 1
        _check_on_disk(reg)
        consistent += 1
    print(f"\nregistry: kills: {kills}, consistent after each: {consistent}, "
          f"killed between pointer and statuses: {torn}, promotions after a kill: {parent_promotions}, "
          f"versions: {len(reg.list('lm'))}")
    assert consistent == kills
