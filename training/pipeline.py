"""The training pipeline: prepare transcripts → train → gate the candidate against the version in
service → register → promote, for the LM (LoRA) and for the retriever (the embedder).

``botkit train transcripts``, ``train retriever``, ``eval model`` and ``models`` are thin shells
around these functions; they live here so that a scheduled retrain, a notebook or a test can run
the same steps without the command line. Inputs are explicit: the :class:`~botkit.project.Project`,
the options, the :class:`~training.registry.ModelRegistry`, and what only the application can
build. The knowledge base is such a thing: ``knowledge.embedding.model: registry`` is resolved by
the application layer, which training must not import, so callers pass ``open_kb``, a function
returning the project's knowledge base, not yet started. Progress lines go to ``log`` (the CLI
passes stderr); results come back as small dataclasses for the caller to print.

Registering and promoting are separate steps (:func:`promote_if_passed`), so the caller can show
the gate's report before the registry's pointer moves. Heavy libraries (torch, transformers) are
imported inside the functions that use them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botkit.errors import BotkitError
from training.registry import ModelRegistry, gate_refusal

if TYPE_CHECKING:
    from botkit.config import LocalLMConfig
    from botkit.project import Project
    from knowledge.base import KnowledgeBase
    from training.evaluate import Decision
    from training.registry import ModelVersion
    from training.sft import Retrieve

Log = Callable[[str], None]
OpenKB = Callable[[], "KnowledgeBase"]


def _silent(message: str) -> None:
    """The default ``log``: a pipeline run from code says nothing unless asked to."""


# --- shared steps ------------------------------------------------------------------------------

def resolve_base(project: Project, base_model: str) -> Path:
    """train.yaml's base_model: ``registry`` (the base `botkit train base` installed) or a path."""
    from training.registry import REGISTRY, base_model_path

    if base_model == REGISTRY:
        return base_model_path(ModelRegistry.for_project(project))
    base = Path(base_model).expanduser()
    return base if base.is_absolute() else (project.root / base).resolve()


def passages_for(kb: KnowledgeBase, project: Project) -> Retrieve:
    """question -> the passages the bot would be given for it (a KB search, as the engine runs it)."""
    from botkit.generation.prompt import select_passages

    top_k = project.config.knowledge.retrieval.top_k

    def passages(question: str) -> list[Any]:
        try:
            return select_passages(kb.search(question, top_k))
        except BotkitError:
            return []

    return passages


def _lm_pair(project: Project, registry: ModelRegistry, base_model: str,
             adapter: Path) -> tuple[LocalLMConfig, LocalLMConfig]:
    """(the LM in service, the candidate ``adapter`` on ``base_model``), both with the project's
    local_lm settings so that the gate scores them as the bot would serve them."""
    from botkit.config import LocalLMConfig
    from training.registry import current_lm_config

    base_lm = (project.config.dialogue.local_lm or LocalLMConfig(model_path=base_model)).model_copy(
        update={"model_path": base_model, "adapter_path": None})
    current = current_lm_config(registry, base_lm) if registry.current("lm") else base_lm
    return current, base_lm.model_copy(update={"adapter_path": str(adapter)})


@dataclass(frozen=True)
class Candidate:
    """A registered version that is not in service yet, and the gate's verdict on it."""

    kind: str
    version: ModelVersion
    passed: bool  # did it beat (or, with nothing in service, clear the floors of) the gate?
    reason: str  # what the registry's event log records when it is promoted


@dataclass(frozen=True)
class LMCandidate(Candidate):
    run_dir: Path  # state/training/run-...: data/, model/, gate/
    data_dir: Path
    decision: Decision
    report_paths: dict[str, Path]  # the gate report: json, md, png


@dataclass(frozen=True)
class RetrieverCandidate(Candidate):
    run_dir: Path
    base_dir: Path  # the embedder it was fine-tuned from (the one in service)
    held_out: int
    before: float  # held-out accuracy@1 of base_dir
    after: float  # ... and of the candidate
    metrics: dict[str, Any]


def promote_if_passed(registry: ModelRegistry, candidate: Candidate, *, by: str, allowed: bool = True) -> bool:
    """Put ``candidate`` in service when it passed its gate and ``allowed`` (False: register
    only, e.g. ``--no-promote``). Whether it was promoted."""
    if not (candidate.passed and allowed):
        return False
    registry.promote(candidate.kind, candidate.version.version, reason=candidate.reason, by=by)
    return True


# --- the LM ------------------------------------------------------------------------------------

def train_transcripts(project: Project, paths: Sequence[Path | str], *, registry: ModelRegistry, open_kb: OpenKB,
                      config_path: Path | None = None, overrides: Sequence[str] = (),
                      order_id_pattern: str | None = None, eval_conversations: int = 20,
                      log: Log = _silent) -> LMCandidate:
    """Data → LoRA fine-tuning → evaluation gate against the LM in service → register (not promote).

    ``config_path``: the training YAML (default ``train.yaml`` in the project, if there);
    ``overrides``: ``KEY=VALUE`` strings on top of it. The run's files go to a new
    ``state/training/run-YYYYmmdd-HHMMSS`` directory."""
    import time

    from training.config import load_train_config
    from training.evaluate import GateConfig, decide, evaluate_candidate, load_validation, write_report
    from training.lora import train
    from training.redact import Redactor
    from training.registry import hash_files
    from training.transcripts import prepare

    run = project.state_dir / "training" / time.strftime("run-%Y%m%d-%H%M%S")
    data_dir = run / "data"
    log(f"1/4 preparing transcripts into {data_dir}")
    report = prepare([Path(p) for p in paths], data_dir, redactor=Redactor(order_id_pattern=order_id_pattern))
    log(f"    kept {report.kept} conversations (report: {data_dir / 'report.md'})")

    config_path = config_path or project.root / "train.yaml"
    config = load_train_config(config_path if config_path.exists() else None,
                               [*overrides, f"output_dir={run / 'model'}"])
    config = config.model_copy(update={"base_model": str(resolve_base(project, config.base_model))})

    kb = open_kb()
    try:
        kb.start()
        passages = passages_for(kb, project)
        # The bot's own name and history window: the prompts trained on are the prompts served.
        config = config.model_copy(update={"bot_name": project.config.name})
        history_turns = project.config.dialogue.history_turns

        log(f"2/4 fine-tuning {config.base_model} (LoRA r={config.lora.r})")
        result = train(config, data_dir, retrieve=passages if config.with_passages else None,
                       history_turns=history_turns)
        log(f"    loss {_num(result.metrics.get('first_loss'))} -> {_num(result.metrics.get('last_loss'))}; "
            f"{result.metrics.get('tokens_per_s', 0):.0f} tokens/s; curve: {result.output_dir / 'loss.png'}")

        current, candidate = _lm_pair(project, registry, config.base_model, result.adapter_dir)
        log("3/4 evaluating the candidate against the model in service on held-out conversations")
        gate_report = evaluate_candidate(candidate, current, load_validation(data_dir), passages_for=passages,
                                         max_conversations=eval_conversations, project_root=project.root,
                                         bot_name=project.config.name, history_turns=history_turns)
        decision = decide(gate_report, GateConfig())
        paths_written = write_report(gate_report, decision, run / "gate")
    finally:
        kb.close()

    version = registry.register("lm", result.adapter_dir, {
        "base_model": config.base_model,
        "data_hash": hash_files(data_dir / "train.jsonl", data_dir / "validation.jsonl"),
        "config": config.model_dump(mode="json"), "metrics": result.metrics, "eval_report": str(paths_written["md"]),
        "gate": {"promote": decision.promote, "reasons": decision.reasons},
    })
    log(f"4/4 registered lm {version.label}")
    return LMCandidate(kind="lm", version=version, passed=decision.promote, reason="passed the evaluation gate",
                       run_dir=run, data_dir=data_dir, decision=decision, report_paths=paths_written)


@dataclass(frozen=True)
class GateResult:
    """``eval model``: a registered LM version scored against the one in service."""

    version: ModelVersion
    decision: Decision
    report_paths: dict[str, Path]


def eval_model(project: Project, version: int | str, data_dir: Path, *, registry: ModelRegistry, open_kb: OpenKB,
               out_dir: Path | None = None, eval_conversations: int = 20) -> GateResult:
    """Run the evaluation gate on LM ``version`` against the LM in service, on ``data_dir``'s
    validation.jsonl; the report goes to ``out_dir`` (default: ``eval/`` beside the version)."""
    from training.evaluate import GateConfig, decide, evaluate_candidate, load_validation, write_report

    mv = registry.get("lm", version)
    current, candidate = _lm_pair(project, registry, str(mv.metadata.get("base_model") or ""), mv.path)
    with open_kb() as kb:
        report = evaluate_candidate(candidate, current, load_validation(data_dir),
                                    passages_for=passages_for(kb, project), max_conversations=eval_conversations,
                                    project_root=project.root, bot_name=project.config.name,
                                    history_turns=project.config.dialogue.history_turns)
    decision = decide(report, GateConfig())
    return GateResult(mv, decision, write_report(report, decision, out_dir or mv.path / "eval"))


# --- the retriever -----------------------------------------------------------------------------

def _num(value: Any) -> str:
    """A metric for a log line: 4 decimals, or '?' when there is none."""
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def train_retriever(project: Project, paths: Sequence[Path | str], *, registry: ModelRegistry, open_kb: OpenKB,
                    epochs: int = 1, margin: float = 0.01, order_id_pattern: str | None = None,
                    progress_bar: bool = False, log: Log = _silent) -> RetrieverCandidate:
    """Mine question → article pairs, fine-tune the embedder in service, gate it on held-out
    pairs (it passes when accuracy@1 gains at least ``margin``), register (not promote)."""
    import hashlib
    import tempfile
    import time

    from knowledge.base import KnowledgeBase
    from knowledge.embedding import make_embedder
    from knowledge.models import resolve_model_path
    from knowledge.store import KnowledgeStore
    from training.redact import Redactor
    from training.retriever import mine_pairs
    from training.retriever import train_retriever as fine_tune
    from training.transcripts import prepare
    from training.types import read_prepared

    run = project.state_dir / "training" / time.strftime("retriever-%Y%m%d-%H%M%S")
    started = time.monotonic()

    def step(n: int, what: str) -> None:
        log(f"[{n}/4 {time.monotonic() - started:5.0f}s] {what}")

    step(1, "preparing the transcripts (clean, redact, split)")
    prepare([Path(p) for p in paths], run / "data", redactor=Redactor(order_id_pattern=order_id_pattern))
    transcripts = read_prepared(run / "data" / "train.jsonl") + read_prepared(run / "data" / "validation.jsonl")
    current = registry.current("retriever")
    base_dir = current.path if current is not None else resolve_model_path(
        project.config.knowledge.embedding.model if project.config.knowledge.embedding.model != "registry"
        else "default", project.root)
    step(2, f"mining question -> article pairs from {len(transcripts)} conversations and the knowledge base")
    with open_kb() as kb:
        pairs = mine_pairs(transcripts, kb)
    held = [p for p in pairs if int(hashlib.sha256(p.query.encode()).hexdigest(), 16) % 5 == 0]
    train_pairs = [p for p in pairs if p not in held]
    step(3, f"{len(pairs)} pairs mined ({len(train_pairs)} train, {len(held)} held out); fine-tuning {base_dir.name}"
         + ("" if progress_bar else f" for {epochs} epoch(s)"))
    metrics = fine_tune(train_pairs, base_dir, run / "model", epochs=epochs, progress=progress_bar)

    def accuracy(model_dir: Path) -> float:
        # A private index for each model over the same store: the embedding cache keys on the
        # model's fingerprint, so nothing is mixed up with the serving index.
        with tempfile.TemporaryDirectory() as tmp:
            kb = KnowledgeBase(KnowledgeStore(project.db_path), make_embedder(str(model_dir)), Path(tmp),
                               project.config.knowledge, progress=False)
            with kb:
                hits = [kb.search(p.query, 1).best for p in held]
        return sum(h is not None and h.article_id == p.article_id for h, p in zip(hits, held)) / max(1, len(held))

    step(4, f"held-out accuracy@1: the model in service, then the candidate ({len(held)} questions; each "
         "embeds the knowledge base once)")
    before, after = accuracy(base_dir), accuracy(run / "model")
    metrics = {**metrics, "held_out_pairs": len(held), "accuracy_at_1_before": before, "accuracy_at_1_after": after}
    version = registry.register("retriever", run / "model", {"base_model": str(base_dir), "metrics": metrics})
    return RetrieverCandidate(kind="retriever", version=version, passed=after >= before + margin,
                              reason=f"accuracy@1 {before:.3f} -> {after:.3f}", run_dir=run, base_dir=base_dir,
                              held_out=len(held), before=before, after=after, metrics=metrics)


# --- the registry by hand (`botkit models`) ----------------------------------------------------

def version_record(mv: ModelVersion) -> dict[str, Any]:
    """One version as the stable JSON that ``botkit models list --json`` prints."""
    return {"kind": mv.kind, "version": mv.label, "status": mv.status, "path": str(mv.path),
            "created_at": mv.metadata.get("created_at"), "base_model": mv.metadata.get("base_model"),
            "data_hash": mv.metadata.get("data_hash"), "metrics": mv.metadata.get("metrics", {}),
            # the evaluation gate's decision, {"promote": bool, "reasons": [...]}; null when none ran
            "gate": mv.metadata.get("gate")}


def find_version(registry: ModelRegistry, kind: str, version: int | str | None) -> ModelVersion:
    """``version`` of ``kind``, or the one in service when None (an error saying what to run if none is)."""
    mv = registry.get(kind, version) if version else registry.current(kind)
    if mv is None:
        raise BotkitError(f"no {kind} version is in service; `botkit models list --kind {kind}`")
    return mv


@dataclass(frozen=True)
class Promotion:
    version: ModelVersion
    forced: bool  # promoted past the evaluation gate's refusal (``force``)


def promote_version(registry: ModelRegistry, kind: str, version: int | str, *, reason: str, by: str,
                    force: bool = False) -> Promotion:
    """Promote by hand. A version the evaluation gate refused is refused here too (the error lists
    the gate's reasons); ``force`` promotes it anyway and the event log's reason says "forced"."""
    mv = registry.promote(kind, version, reason=reason, by=by, force=force)
    return Promotion(mv, forced=force and gate_refusal(mv) is not None)


__all__ = ["Candidate", "GateResult", "LMCandidate", "Log", "OpenKB", "Promotion", "RetrieverCandidate",
           "eval_model", "find_version", "passages_for", "promote_if_passed", "promote_version", "resolve_base",
           "train_retriever", "train_transcripts", "version_record"]
