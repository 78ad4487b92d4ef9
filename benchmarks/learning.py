"""Does fine-tuning on a team's transcripts make the replies better? Measured on held-out conversations.

Rows, on the same held-out agent replies, each prompted exactly as the bot serves (the passages
retrieval finds in the data set's knowledge base, the recent turns, the question:
``training.sft.reply_turns``):

* **base (prompted)**: the pretrained base model as ``botkit train base`` installs it, no training;
* **base + LoRA**: the same model fine-tuned with ``training.lora.train`` on the train split;
* **extractive**: the responder a user has without an LM (the best passage, quoted).

Measures (``training.evaluate``, the gate's own code): ROUGE-L and MiniLM cosine of the reply to
the real agent reply, the share of replies that pass the grounding check against their passages,
the share with an invented number or code (in neither the passages nor the conversation), and
loss/perplexity of the real agent replies under the model (teacher forcing; not defined for
extractive). Greedy decoding, ``--max-new-tokens``.

Data sets:

* ``demo``: the demo transcripts (``demo/transcripts``) and the demo help centre (``demo/kb``);
  ``prepare()`` splits by conversation id (``--validation`` share held out).
* ``star``: the first ``--star-dialogues`` STAR dialogues (``../shared/datasets/star``, MIT),
  converted as ``benchmarks/star_training.py`` does (User utter -> customer, Wizard utter and
  pick_suggestion -> agent) and split by DialogueID; its knowledge base is built from the task
  policies' reply texts (``tasks/<task>/<task>.json``: one article per task, a section per reply
  template, e.g. "Your current balance is {balance:d} in credit."), so retrieval can hand the
  model the canned replies its agents chose from.

    python benchmarks/learning.py [--datasets demo,star] [--config demo/train-gemma.yaml]
        [--max-steps N] [--star-dialogues 200] [--eval-turns 40] [--max-new-tokens 64]
        [--base HF_DIR]

Cost on 2 cores: training dominates (see the printed tokens/s); evaluation generates
``--eval-turns`` replies per model row.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.common import log

METRICS = ("loss", "perplexity", "cosine", "rouge_l", "grounding_rate", "invented_rate")


# -- knowledge bases and transcripts ----------------------------------------------------------

def star_kb(tasks_dir: Path, dest: Path) -> int:
    """One Markdown article per STAR task, one section per reply template of its policy."""
    skip = re.compile(r"^(query|query_failure|query_success|info_missing\d*)$")
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for task_file in sorted(tasks_dir.glob("*/*.json")):
        task = json.loads(task_file.read_text(encoding="utf-8"))
        name = str(task.get("task") or task_file.stem)
        title = name.replace("_", " ").capitalize()
        sections = [f"## {key.replace('_', ' ').capitalize()}\n\n{text.strip()}\n"
                    for key, text in (task.get("replies") or {}).items()
                    if isinstance(text, str) and text.strip() and not skip.match(key)]
        if not sections:
            continue
        body = f"---\nid: {name}\ntitle: {title}\n---\n\nWhat our agents say when helping with {title.lower()}.\n\n"
        (dest / f"{name}.md").write_text(body + "\n".join(sections), encoding="utf-8")
        n += 1
    return n


def make_project(work: Path, dataset: str, args: Any) -> tuple[Path, list[Path], str]:
    """(project dir with its KB imported, transcript sources, what the KB is)."""
    from botkit.project import Project, init_project
    from knowledge.base import KnowledgeBase

    root = work / dataset
    if dataset == "demo":
        root.mkdir(parents=True)
        shutil.copy(common.REPO / "demo" / "bot.yaml", root / "bot.yaml")
        shutil.copytree(common.REPO / "demo" / "kb", root / "kb")
        sources = [common.REPO / "demo" / "transcripts"]
        what = "demo help centre (demo/kb)"
    else:
        from benchmarks.star_training import convert

        init_project(root, "Support")
        n = star_kb(common.data_path(args, "star", "tasks"), root / "kb")
        raw = work / "star.jsonl"
        counts = convert(common.data_path(args, "star", "dialogues.jsonl.gz"), raw, args.star_dialogues, False)
        log(f"star: {counts['dialogues']} dialogues converted; KB of {n} task articles")
        sources = [raw]
        what = f"{n} STAR task policies' reply texts"
    project = Project.load(root)
    with KnowledgeBase.open(project, progress=False) as kb:
        kb.import_paths(project.source_paths(), "benchmark")
    return root, sources, what


# -- the extractive row -----------------------------------------------------------------------

def extractive_report(kb: Any, project: Any, validation: list[Any], passages_for: Any, embedder: Any,
                      max_turns: int, history_turns: int) -> dict[str, Any]:
    """The extractive responder on the same reply turns, measured the same way."""
    from botkit.generation.grounding import is_grounded
    from botkit.generation.prompt import passage_evidence
    from botkit.responders.extractive import ExtractiveResponder
    from botkit.types import IncomingMessage, ResponderRequest
    from training.evaluate import cosine_pairs, invents_numbers, rouge_l
    from training.sft import reply_turns

    responder = ExtractiveResponder(project.config.dialogue.clarify_margin)
    refs, gens, grounded, invented = [], [], [], []
    for t in validation:
        for turn in reply_turns(t, project.config.name, passages_for, history_turns):
            if len(refs) >= max_turns:
                break
            result = kb.search(turn.question, project.config.knowledge.retrieval.top_k)
            req = ResponderRequest(turn.question, IncomingMessage(t.id, turn.question), (), result, project.config.name)
            text = asyncio.run(responder.respond(req)).text
            refs.append(turn.reply)
            gens.append(text)
            evidence = [passage_evidence(h) for h in turn.passages]
            if evidence:
                grounded.append(is_grounded(text, evidence, project.config.dialogue.min_grounding)[0])
            invented.append(invents_numbers(text, turn))
    cos = cosine_pairs(embedder, refs, gens)
    return {"model": "extractive", "turns": len(refs), "metrics": {
        "loss": None, "perplexity": None, "cosine": sum(cos) / len(cos),
        "rouge_l": sum(rouge_l(r, g) for r, g in zip(refs, gens)) / len(refs),
        "grounding_rate": sum(grounded) / len(grounded) if grounded else None,
        "invented_rate": sum(invented) / len(invented)}}


# -- one data set -----------------------------------------------------------------------------

def run_dataset(dataset: str, args: Any, work: Path, base: Path) -> dict[str, Any]:
    from botkit.config import LocalLMConfig
    from botkit.generation.prompt import select_passages
    from botkit.project import Project
    from knowledge.base import KnowledgeBase
    from knowledge.embedding import make_embedder
    from training.config import load_train_config
    from training.evaluate import evaluate_candidate
    from training.lora import train
    from training.redact import Redactor
    from training.transcripts import prepare
    from training.types import read_prepared

    root, sources, kb_what = make_project(work, dataset, args)
    project = Project.load(root)
    data = work / f"{dataset}-data"
    report = prepare(sources, data, redactor=Redactor(), validation_fraction=args.validation)
    log(f"{dataset}: kept {report.kept} conversations ({report.train} train, {report.validation} validation)")
    history_turns = project.config.dialogue.history_turns
    overrides = [f"base_model={base}", f"output_dir={work / (dataset + '-adapter')}", "resume=false",
                 *([f"max_steps={args.max_steps}"] if args.max_steps else []), *args.set]
    config = load_train_config(args.config, overrides).model_copy(update={"bot_name": project.config.name})
    embedder = make_embedder()
    with KnowledgeBase.open(project, progress=False) as kb:
        top_k = project.config.knowledge.retrieval.top_k

        def passages_for(question: str) -> list[Any]:
            return select_passages(kb.search(question, top_k))

        log(f"{dataset}: fine-tuning {base.name} (LoRA r={config.lora.r}, max_length {config.max_length})")
        t0 = time.perf_counter()
        result = train(config, data, retrieve=passages_for if config.with_passages else None,
                       history_turns=history_turns)
        train_s = time.perf_counter() - t0
        validation = read_prepared(data / "validation.jsonl")
        lm = LocalLMConfig(model_path=str(base), threads=args.threads)
        log(f"{dataset}: scoring base and fine-tuned on up to {args.eval_turns} held-out replies")
        gate = evaluate_candidate(lm.model_copy(update={"adapter_path": str(result.adapter_dir)}), lm, validation,
                                  passages_for=passages_for, max_conversations=None, max_turns=args.eval_turns,
                                  max_new_tokens=args.max_new_tokens, embedder=embedder, project_root=root,
                                  min_grounding=project.config.dialogue.min_grounding, bot_name=project.config.name,
                                  history_turns=history_turns)
        extractive = extractive_report(kb, project, validation, passages_for, embedder, args.eval_turns,
                                       history_turns)
    assert gate.current is not None
    rows = [
        {"model": "base (prompted)", "turns": gate.current.turns, "metrics": gate.current.metrics},
        {"model": "base + LoRA", "turns": gate.candidate.turns, "metrics": gate.candidate.metrics},
        extractive,
    ]
    samples = [{"reference": e.reference, "fine_tuned": e.generated} for e in gate.candidate.examples]
    base_samples = [e.generated for e in gate.current.examples]
    for s, b in zip(samples, base_samples):
        s["base"] = b
    m = result.metrics
    return {"dataset": dataset, "kb": kb_what, "rows": rows, "samples": samples,
            "prepare": {"kept": report.kept, "train": report.train, "validation": report.validation},
            "training": {k: m.get(k) for k in ("steps", "epochs", "train_examples", "tokens_seen", "tokens_per_s",
                                                "runtime_s", "first_loss", "last_loss", "eval_loss",
                                                "peak_memory_mb", "dtype")} | {"wall_s": round(train_s, 1)},
            "config": {"lora_r": config.lora.r, "targets": config.lora.target_modules, "max_length": config.max_length,
                       "batch_size": config.batch_size, "grad_accum": config.grad_accum, "epochs": config.epochs,
                       "max_steps": config.max_steps, "learning_rate": config.learning_rate}}


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="demo,star")
    p.add_argument("--config", type=Path, default=common.REPO / "demo" / "train-gemma.yaml",
                   help="the training recipe (a train.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's steps")
    p.add_argument("--star-dialogues", type=int, default=200)
    p.add_argument("--validation", type=float, default=0.2, help="share of conversations held out")
    p.add_argument("--eval-turns", type=int, default=40, help="held-out agent replies scored per row")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base", type=Path, default=None,
                   help="a causal-LM directory (default: the installed Gemma 3 270M)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    from botkit.cpu import describe
    from training.pretrained import installed

    if args.base is None:
        got = installed("gemma-3-270m")
        if got is None:
            sys.exit("no base model: run `botkit train base --pretrained gemma-3-270m` first (or pass --base DIR)")
        args.base = got.hf_dir
    common.print_header("Fine-tuning on transcripts: base vs base + LoRA vs extractive, on held-out replies", [
        f"base: {args.base}", f"recipe: {args.config} {' '.join(args.set)}", f"cpu: {describe()}",
        f"eval: up to {args.eval_turns} held-out agent replies per row, greedy, max_new_tokens {args.max_new_tokens}",
    ])
    work = common.workdir()
    results = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        res = run_dataset(dataset, args, work, args.base)
        results.append(res)
        tr = res["training"]
        common.print_table(["model", "turns", "loss", "perplexity", "cosine", "ROUGE-L", "grounded", "invented"],
                           [(r["model"], r["turns"], *(_fmt(r["metrics"].get(k)) for k in METRICS))
                            for r in res["rows"]],
                           title=f"{dataset}: KB = {res['kb']}; {res['prepare']['train']} train / "
                                 f"{res['prepare']['validation']} held-out conversations")
        print(f"training: {tr['steps']} steps ({tr['epochs']:.2f} epochs, {tr['train_examples']} examples), "
              f"{tr['tokens_seen']} tokens in {tr['runtime_s']:.0f} s = {tr['tokens_per_s']} tokens/s, "
              f"loss {tr['first_loss']} -> {tr['last_loss']}, eval loss {tr['eval_loss']}, "
              f"peak RSS {tr['peak_memory_mb']} MB, dtype {tr['dtype']}; config {res['config']}")
        for s in res["samples"][:3]:
            print(f"  real:       {s['reference'][:160]!r}\n  base:       {s.get('base', '')[:160]!r}\n"
                  f"  fine-tuned: {s['fine_tuned'][:160]!r}")
        print()
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
