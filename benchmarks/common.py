"""Shared helpers for the benchmark scripts: temporary projects, timing, memory, tables.

Every script prints, on stdout, a header (what, the machine, the exact command) and plain
text tables; progress goes to stderr. Data sets are read from ``../shared/datasets``
(relative to the repository root) unless ``--data`` says otherwise; they are never copied.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # allow `python benchmarks/x.py` as well as `python -m benchmarks.x`
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = Path("../shared/datasets")  # relative to the repository root

_T0 = time.perf_counter()


# -- output ---------------------------------------------------------------------------------
def log(msg: str) -> None:
    """Progress line on stderr, with seconds since the script started."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def command_line() -> str:
    """The command that was run, as it could be typed again from the repository root."""
    argv0 = Path(sys.argv[0]).resolve()
    try:
        shown = str(argv0.relative_to(REPO))
    except ValueError:
        shown = str(argv0)
    return "python " + shlex.join([shown, *sys.argv[1:]])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _ram_gib() -> float:
    try:
        import psutil

        return psutil.virtual_memory().total / 2**30
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "?"))
    except Exception:  # noqa: BLE001 - absent or broken: say so
        return "absent"


def machine_line() -> str:
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    flags = _cpu_flags()
    simd = ",".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags) or "-"
    try:
        import torch

        torch_v = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except Exception:  # noqa: BLE001
        torch_v = "absent"
    load = os.getloadavg()
    return (
        f"{_cpu_model()}, {cores} logical cores ({usable} usable), {_ram_gib():.1f} GiB RAM, "
        f"SIMD {simd}; {platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"torch {torch_v}, faiss {_version('faiss')}, numpy {_version('numpy')}, "
        f"onnxruntime {_version('onnxruntime')}, sentence-transformers {_version('sentence_transformers')}; "
        f"load average at start {load[0]:.2f}"
    )


def print_header(title: str, notes: Iterable[str] = ()) -> None:
    print(f"== {title} ==")
    print(f"date:    {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine_line()}")
    print(f"command: {command_line()}")
    env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OPENBLAS_NUM_THREADS") if k in os.environ}
    print("env:     " + (" ".join(f"{k}={v}" for k, v in env.items()) or "no OMP_*/BLAS thread variables set"))
    for note in notes:
        print(f"note:    {note}")
    print(flush=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """An aligned plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [] if title is None else [title]
    out += [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    print(table(headers, rows, title))
    print(flush=True)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


# -- arguments and data ---------------------------------------------------------------------
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="the shared datasets folder (default: ../shared/datasets from the repository root)")
    p.add_argument("--cache", type=Path, default=None,
                   help="keep KB databases (with their embedding caches) under this folder and reuse them "
                        "in later runs and other scripts (run_all.sh uses benchmarks/out/cache); default: "
                        "a temporary folder, so everything is embedded afresh")
    return p


def state_dir(args: argparse.Namespace, name: str) -> Path:
    """Where a KB's database and index live: under --cache (kept) or in a temporary folder."""
    if getattr(args, "cache", None) is None:
        return workdir() / name
    base = args.cache if args.cache.is_absolute() else REPO / args.cache
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def print_footer() -> None:
    load = os.getloadavg()
    print(f"peak RSS: {peak_rss_mib():.0f} MiB; wall time {time.perf_counter() - _T0:.0f}s; "
          f"load average at end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)")


def data_path(args: argparse.Namespace, *parts: str) -> Path:
    base = args.data if args.data.is_absolute() else REPO / args.data
    path = base.joinpath(*parts)
    if not path.exists():
        sys.exit(f"{path}: not found; pass --data pointing at the shared datasets folder")
    return path


# -- temporary projects ---------------------------------------------------------------------
_TMP: list[str] = []


def workdir(prefix: str = "botkit-bench-") -> Path:
    """A fresh temporary directory, removed when the script exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    _TMP.append(path)
    return Path(path)


@atexit.register
def _cleanup() -> None:
    for path in _TMP:
        shutil.rmtree(path, ignore_errors=True)


def make_project(knowledge: dict[str, Any] | None = None, *, root: Path | None = None,
                 state_dir: Path | None = None, name: str = "benchmark bot"):
    """A new bot project in ``root`` (default: a fresh temporary directory) whose bot.yaml holds
    ``{"knowledge": knowledge}``. ``state_dir`` (absolute) lets several projects, each with its
    own configuration, share one database and index, so embeddings are computed once."""
    import yaml

    from botkit.config import CONFIG_FILE, parse_config
    from botkit.project import Project, init_project

    root = Path(root) if root is not None else workdir() / "project"
    data: dict[str, Any] = {"name": name, "knowledge": knowledge or {}}
    if state_dir is not None:
        data["state_dir"] = str(Path(state_dir).resolve())
    parse_config(data)  # fail before touching the disk when the dict is wrong
    init_project(root, name)
    (root / CONFIG_FILE).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return Project.load(root)


def stop_server(server: "subprocess.Popen[Any]", timeout: float = 30.0) -> None:
    """SIGTERM a served bot and wait for its clean exit; kill it if it does not exit in time."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout)
    except subprocess.TimeoutExpired:
        server.kill()


def load_test_demo(demo: Path, dest: Path) -> Path:
    """A copy of a ``demo/`` project at ``dest/demo`` for one load-generating client: escalation
    rules off, web chat rate limits out of the way. Its KB is not imported yet."""
    import yaml

    root = dest / "demo"
    shutil.copytree(demo, root, ignore=shutil.ignore_patterns(".botkit"))
    cfg = yaml.safe_load((root / "bot.yaml").read_text())
    cfg["escalation"] = {"rules": []}
    cfg["channels"] = {"webchat": {"rate_limit_per_session": {"messages": 1_000_000, "seconds": 1},
                                   "rate_limit_per_ip": {"messages": 1_000_000, "seconds": 1},
                                   "max_connections_per_ip": 100_000}}
    (root / "bot.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def knowledge_config(*, hybrid: bool = True, lexical_weight: float = 0.3, threshold: float | None = None,
                     backend: str = "torch-fp32", index_type: str = "auto") -> dict[str, Any]:
    retrieval: dict[str, Any] = {"hybrid": hybrid, "lexical_weight": lexical_weight}
    if threshold is not None:
        retrieval["threshold"] = threshold
    return {"embedding": {"backend": backend}, "index": {"type": index_type}, "retrieval": retrieval}


class RecordingKB:
    """Wraps a KnowledgeBase so that every ``search`` result is kept (for threshold sweeps)
    while the unchanged ``evaluate_retrieval`` code path runs."""

    def __init__(self, kb: Any):
        self._kb = kb
        self.results: list[Any] = []

    def search(self, query: str, k: int | None = None):
        result = self._kb.search(query, k)
        self.results.append(result)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kb, name)


# -- numbers --------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 1] (same definition as knowledge.evaluate)."""
    if not values:
        return float("nan")
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS deltas mean something."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def ranking_metrics(ranks: Sequence[int]) -> dict[str, float]:
    """acc@1, recall@k and MRR from 1-based ranks (0 = not in the top k)."""
    n = len(ranks)
    return {
        "acc1": sum(r == 1 for r in ranks) / n,
        "recall": sum(r > 0 for r in ranks) / n,
        "mrr": sum(1 / r for r in ranks if r) / n,
    }


def ranks_from_scores(scores: Any, labels: Sequence[int], k: int) -> list[int]:
    """1-based rank of each true label among the top k columns of a score matrix (0 = absent)."""
    import numpy as np

    scores = np.asarray(scores)
    top = np.argsort(-scores, axis=1)[:, :k]
    out = []
    for row, label in zip(top, labels):
        hit = np.nonzero(row == label)[0]
        out.append(int(hit[0]) + 1 if len(hit) else 0)
    return out


def fit_logreg(X: Any, y: Sequence[int], Cs: Sequence[float] = (1.0, 10.0, 100.0), seed: int = 0):
    """Logistic regression with C chosen by 3-fold cross-validation on the training data only
    (no search when one C is given). Returns (fitted model, chosen C, {C: mean CV accuracy})."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    scores: dict[float, float] = {}
    for C in Cs if len(Cs) > 1 else ():  # a single C: no search
        model = LogisticRegression(C=C, max_iter=2000)
        scores[C] = float(cross_val_score(model, X, y, cv=cv, n_jobs=1).mean())
    best = max(scores, key=lambda c: scores[c]) if scores else Cs[0]
    model = LogisticRegression(C=best, max_iter=2000).fit(X, y)
    return model, best, scores


def time_single(fn: Any, items: Sequence[Any]) -> list[float]:
    """Milliseconds of fn(item) for each item, one at a time."""
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def describe_c(name: str, c: float, cv: dict[float, float],
               origin: str = "chosen earlier by 3-fold CV on train; --cv redoes the search") -> str:
    if not cv:
        return f"{name}: C={c} (fixed: {origin})"
    return f"{name}: C={c} (3-fold CV accuracy on train: " + ", ".join(f"C={k}: {v:.4f}" for k, v in cv.items()) + ")"
