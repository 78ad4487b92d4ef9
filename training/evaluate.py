"""The evaluation gate: does a fine-tuned candidate beat the model that serves now?

Both models are scored on the same held-out conversations (``validation.jsonl``). For every
agent reply the prompt is the one serving and training build (:func:`training.sft.reply_turns`:
the system message with the passages ``passages_for`` gives for the customer's question, the
last ``history_turns`` turns, the question; tokenised by
:func:`botkit.generation.prompt.encode_prompt`) and:

=======================  =================================================================  ======
metric                   how                                                                better
=======================  =================================================================  ======
loss                     mean cross-entropy per token of the real agent reply, teacher      lower
                         forcing, labels masked outside the reply (token-weighted)
perplexity               exp(loss)                                                          lower
cosine                   embedding cosine of the greedy reply vs the real one (MiniLM)      higher
rouge_l                  ROUGE-L F1 of the greedy reply vs the real one (rouge-score)       higher
grounding_rate           share of replies :func:`is_grounded` in ``passages_for(question)``  higher
                         (only turns with passages; None without ``passages_for``)
invented_rate            share of replies with a number or code found neither in the        lower
                         passages nor in the conversation (:func:`unsupported_numbers`)
escalation_agreement     share of turns where "the model hands off" equals "the agent       higher
                         handed off" (see :func:`hands_off`)
=======================  =================================================================  ======

Escalation is deliberately simple: a reply hands off when it matches :data:`HANDOFF_PATTERN`
("transfer you", "connect you with", "a colleague", "escalate", ...). The real agent handed off
when its reply matches it too, or when it is the last agent turn of a conversation whose
``meta`` says ``escalated`` / ``transferred`` / ``handoff``.

Decision (:func:`decide`): with a current model, promote only when the candidate beats it on the
primary metric by ``min_improvement[primary]`` and is no worse than ``tolerance[m]`` on every
other metric listed there; without one, promote when every metric clears ``floors`` (a
maximum for lower-is-better metrics, a minimum otherwise).

Cost: one forward pass and one greedy generation per agent turn per model; cap it with
``max_conversations`` and ``max_new_tokens``. Plain synchronous code (training side).
"""

from __future__ import annotations

import json
import logging
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from botkit.config import LocalLMConfig
from botkit.generation.grounding import is_grounded, unsupported_numbers
from botkit.generation.prompt import encode_prompt, passage_evidence, prompt_budget
from training.sft import DEFAULT_HISTORY_TURNS, ReplyTurn, Retrieve, reply_turns
from training.types import Transcript, read_prepared

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("loss", "perplexity", "cosine", "rouge_l", "grounding_rate", "invented_rate",
                             "escalation_agreement")
LOWER_IS_BETTER = frozenset({"loss", "perplexity", "invented_rate"})
PANEL_TITLE_CHARS = 24  # what fits over one 2.4-inch panel of gate.png at 8 pt


def panel_title(metric: str) -> str:
    """A gate.png panel's title, on as many lines as its width needs (never cut mid-word)."""
    name = "ROUGE-L" if metric == "rouge_l" else metric.replace("_", " ")
    words = f"{name} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)"
    return textwrap.fill(words, PANEL_TITLE_CHARS, break_long_words=False)


def figure_title(promote: bool, reasons: Sequence[str], panels: int) -> str:
    """gate.png's title: the decision and its first reason, wrapped to the figure's width."""
    text = ("promote" if promote else "do not promote") + (f": {reasons[0]}" if reasons else "")
    return textwrap.fill(text, max(PANEL_TITLE_CHARS, 30 * max(1, panels)), break_long_words=False)
HANDOFF_PATTERN = re.compile(
    r"\b(transfer(?:ring)? you|connect(?:ing)? you (?:with|to)|put(?:ting)? you through|hand(?:ing)? you over"
    r"|pass(?:ing)? (?:you|this) (?:on )?to|escalat\w*"
    r"|a (?:colleague|specialist|supervisor|human|member of (?:the|our) team)"
    r"|human agent|live agent)\b", re.IGNORECASE)
_ESCALATED_META = ("escalated", "transferred", "handoff", "handed_off")


# --- reports ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TurnSample:
    """One evaluated agent turn (kept for a few examples in the report)."""

    conversation_id: str
    turn: int
    reference: str
    generated: str
    loss: float
    cosine: float
    rouge_l: float
    grounded: bool | None
    expected_handoff: bool
    model_handoff: bool


@dataclass(frozen=True)
class ModelReport:
    model: str  # "model_path (+ adapter_path)"
    metrics: dict[str, float | None]
    conversations: int
    turns: int
    reply_tokens: int
    examples: tuple[TurnSample, ...] = ()


@dataclass(frozen=True)
class GateReport:
    candidate: ModelReport
    current: ModelReport | None
    created_at: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateConfig:
    """What "better" means. Margins and tolerances are absolute differences in metric units."""

    primary: str = "loss"
    min_improvement: dict[str, float] = field(default_factory=lambda: {"loss": 0.02})
    tolerance: dict[str, float] = field(default_factory=lambda: {
        "cosine": 0.02, "rouge_l": 0.02, "grounding_rate": 0.05, "invented_rate": 0.0, "escalation_agreement": 0.05})
    floors: dict[str, float] = field(default_factory=lambda: {"cosine": 0.3, "escalation_agreement": 0.5})

    def __post_init__(self) -> None:
        for name, table in (("min_improvement", self.min_improvement), ("tolerance", self.tolerance),
                            ("floors", self.floors)):
            bad = sorted(set(table) - set(METRICS))
            if bad:
                raise ValueError(f"GateConfig.{name}: unknown metric(s) {', '.join(bad)} (known: {', '.join(METRICS)})")
            if name != "floors" and any(v < 0 for v in table.values()):
                raise ValueError(f"GateConfig.{name}: margins must be >= 0, got {table}")
        if self.primary not in METRICS:
            raise ValueError(f"GateConfig.primary: unknown metric {self.primary!r} (known: {', '.join(METRICS)})")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str]


# --- metric helpers --------------------------------------------------------------------------

def rouge_l(reference: str, generated: str) -> float:
    """ROUGE-L F1 (rouge-score, stemmed); 0.0 when either side is empty."""
    from rouge_score import rouge_scorer

    if not reference.strip() or not generated.strip():
        return 0.0
    return float(_scorer(rouge_scorer).score(reference, generated)["rougeL"].fmeasure)


_SCORER: Any = None


def _scorer(module: Any) -> Any:
    global _SCORER
    if _SCORER is None:
        _SCORER = module.RougeScorer(["rougeL"], use_stemmer=True)
    return _SCORER


def cosine_pairs(embedder: Any, references: Sequence[str], generated: Sequence[str]) -> list[float]:
    """Cosine similarity of each (reference, generated) pair, embedded in one batch.

    The embedder returns unit vectors (the :class:`knowledge.embedding.Embedder` contract); we
    normalise again so an injected test embedder need not."""
    if not references:
        return []
    vecs = np.asarray(embedder.embed([*references, *generated]), dtype=np.float64)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = vecs / np.where(norms == 0, 1.0, norms)
    n = len(references)
    sims = np.sum(vecs[:n] * vecs[n:], axis=1)
    return [float(np.clip(s, -1.0, 1.0)) for s in sims]


def hands_off(text: str) -> bool:
    """Whether a reply hands the customer to a person (see :data:`HANDOFF_PATTERN`)."""
    return bool(HANDOFF_PATTERN.search(text))


def _expected_handoff(transcript: Transcript, index: int, last_agent: int) -> bool:
    if hands_off(transcript.messages[index].text):
        return True
    escalated = any(bool(transcript.meta.get(k)) for k in _ESCALATED_META)
    return escalated and index == last_agent


def load_validation(data_dir: Path) -> list[Transcript]:
    """The held-out split of a prepared data directory."""
    return read_prepared(Path(data_dir) / "validation.jsonl")


# --- scoring one model -----------------------------------------------------------------------

def _label(cfg: LocalLMConfig) -> str:
    return cfg.model_path + (f" + {cfg.adapter_path}" if cfg.adapter_path else "")


def _load(cfg: LocalLMConfig, project_root: Path) -> tuple[Any, Any]:
    # Same checks, error messages and adapter merge as serving.
    from botkit.generation.local import LocalCausalLM

    return LocalCausalLM(cfg, project_root, merge_adapter=True)._load()


def invents_numbers(reply: str, turn: ReplyTurn) -> bool:
    """Whether ``reply`` has a number or code that is in neither the passages nor the conversation
    (an order number the customer gave may be repeated; a price nobody wrote may not)."""
    said = [m.content for m in turn.messages[1:]]
    return bool(unsupported_numbers(reply, [*(passage_evidence(h) for h in turn.passages), *said]))


def score_model(cfg: LocalLMConfig, validation: Sequence[Transcript], *, passages_for: Retrieve | None,
                max_conversations: int | None, max_new_tokens: int, embedder: Any,
                project_root: Path, min_grounding: float = 0.6, max_reply_tokens: int = 256,
                keep_examples: int = 5, bot_name: str = "Support",
                history_turns: int = DEFAULT_HISTORY_TURNS, max_turns: int | None = None) -> ModelReport:
    """Score one model on ``validation`` (see the module docstring for the metrics).

    ``max_turns`` caps the agent replies scored (in conversation order), bounding the cost."""
    import torch

    tokenizer, model = _load(cfg, project_root)
    positions = getattr(model.config, "max_position_embeddings", None)
    conversations = list(validation)[: max_conversations] if max_conversations else list(validation)
    total_nll, total_tokens = 0.0, 0
    refs: list[str] = []
    gens: list[str] = []
    samples: list[dict[str, Any]] = []
    grounded: list[bool] = []
    invented: list[bool] = []
    agree: list[bool] = []
    used = 0
    for t in conversations:
        if max_turns is not None and len(refs) >= max_turns:
            break
        turns = reply_turns(t, bot_name, passages_for, history_turns)
        if max_turns is not None:
            turns = turns[: max_turns - len(refs)]
        if not turns:
            continue
        used += 1
        last_agent = max(i for i, m in enumerate(t.messages) if m.role == "agent" and m.text.strip())
        for turn in turns:
            reference = turn.reply
            budget = prompt_budget(cfg.max_prompt_tokens, positions, max(max_reply_tokens, max_new_tokens))
            prompt = encode_prompt(tokenizer, turn.messages, budget)
            reply = list(tokenizer(reference, add_special_tokens=False)["input_ids"])[:max_reply_tokens]
            if positions:
                prompt = prompt[-max(1, positions - len(reply)):]
            ids = torch.tensor([prompt + reply], dtype=torch.long)
            with torch.inference_mode():
                # Logits only where the reply is scored: the LM head over a 262k vocabulary at
                # every prompt position would cost more than the whole model body.
                logits = model(input_ids=ids, logits_to_keep=len(reply) + 1).logits[0, :-1].float()
                targets = ids[0, len(prompt):]
                nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
                turn_nll = float(nll.sum())
                total_nll += turn_nll
                total_tokens += len(reply)
                # Greedy, like serving with temperature 0; sampling knobs of the model's
                # generation_config are cleared so runs are reproducible.
                x = torch.tensor([prompt], dtype=torch.long)
                new = max_new_tokens if not positions else max(1, min(max_new_tokens, positions - len(prompt)))
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new,
                                     do_sample=False, temperature=None, top_p=None, top_k=None,
                                     pad_token_id=tokenizer.pad_token_id)
            generated = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
            refs.append(reference)
            gens.append(generated)
            evidence = [passage_evidence(h) for h in turn.passages]
            ok: bool | None = None
            if passages_for is not None and evidence:
                ok = is_grounded(generated, evidence, min_grounding)[0]
                grounded.append(ok)
            invented.append(invents_numbers(generated, turn))
            expected = _expected_handoff(t, turn.index, last_agent)
            predicted = hands_off(generated)
            agree.append(expected == predicted)
            samples.append(dict(conversation_id=t.id, turn=turn.index, reference=reference, generated=generated,
                                loss=turn_nll / max(1, len(reply)), grounded=ok, expected_handoff=expected,
                                model_handoff=predicted))
    if not refs:
        from botkit.errors import BotkitError

        raise BotkitError("no agent turns to evaluate: the validation set has no agent replies")
    cosines = cosine_pairs(embedder, refs, gens)
    rouges = [rouge_l(r, g) for r, g in zip(refs, gens)]
    loss = total_nll / max(1, total_tokens)
    metrics: dict[str, float | None] = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "cosine": float(np.mean(cosines)),
        "rouge_l": float(np.mean(rouges)),
        "grounding_rate": (sum(grounded) / len(grounded)) if grounded else None,
        "invented_rate": sum(invented) / len(invented),
        "escalation_agreement": sum(agree) / len(agree),
    }
    examples = tuple(TurnSample(**s, cosine=c, rouge_l=r)
                     for s, c, r in list(zip(samples, cosines, rouges))[:keep_examples])
    log.info("scored %s: %d conversations, %d turns, loss %.4f", _label(cfg), used, len(refs), loss)
    return ModelReport(_label(cfg), metrics, used, len(refs), total_tokens, examples)


def evaluate_candidate(candidate: LocalLMConfig, current: LocalLMConfig | None, validation: list[Transcript], *,
                       passages_for: Retrieve | None = None, max_conversations: int | None = 50,
                       max_new_tokens: int = 64, embedder: Any = None, project_root: Path | None = None,
                       min_grounding: float = 0.6, bot_name: str = "Support",
                       history_turns: int = DEFAULT_HISTORY_TURNS, max_turns: int | None = None) -> GateReport:
    """Score ``candidate`` and (when given) ``current`` on the same held-out conversations.

    Args:
        passages_for: question -> the passages the bot would be given (``select_passages`` of a
            KB search), put into the prompts as at serving time and used for the grounding
            rate; None: prompts say "(no passages)" and the grounding rate is not measured.
        bot_name, history_turns: as the bot serves (``name``, ``dialogue.history_turns``).
        embedder: anything with ``embed(texts) -> (n, dim)``; default MiniLM via ``make_embedder()``.
        project_root: relative model/adapter paths are resolved against it (default: cwd).

    Raises:
        GenerationError: a model or adapter could not be loaded.
    """
    from training.quiet import quiet_library_warnings

    quiet_library_warnings()
    if embedder is None:
        from knowledge.embedding import make_embedder

        embedder = make_embedder()
    root = Path(project_root) if project_root is not None else Path.cwd()
    kwargs = dict(passages_for=passages_for, max_conversations=max_conversations, max_new_tokens=max_new_tokens,
                  embedder=embedder, project_root=root, min_grounding=min_grounding, bot_name=bot_name,
                  history_turns=history_turns, max_turns=max_turns)
    cand = score_model(candidate, validation, **kwargs)
    cur = score_model(current, validation, **kwargs) if current is not None else None
    settings = {"max_conversations": max_conversations, "max_turns": max_turns, "max_new_tokens": max_new_tokens,
                "min_grounding": min_grounding, "embedder": getattr(embedder, "name", type(embedder).__name__),
                "validation_conversations": len(validation)}
    return GateReport(cand, cur, datetime.now(timezone.utc).isoformat(timespec="seconds"), settings)


# --- the decision ----------------------------------------------------------------------------

def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def decide(report: GateReport, gate: GateConfig | None = None) -> Decision:
    """Promote or not, with one reason per check (see the module docstring for the rule)."""
    gate = gate or GateConfig()
    cand = report.candidate.metrics
    reasons: list[str] = []
    ok = True
    if report.current is None:
        if not gate.floors:
            reasons.append("no current model and no floors configured: promote")
        for m, limit in gate.floors.items():
            v = cand.get(m)
            if v is None:
                reasons.append(f"{m}: not measured, floor {limit} skipped")
                continue
            passed = v <= limit if m in LOWER_IS_BETTER else v >= limit
            ok &= passed
            rel = "<=" if m in LOWER_IS_BETTER else ">="
            reasons.append(f"{m}: {_fmt(v)} {'meets' if passed else 'fails'} floor {rel} {limit} (no current model)")
        return Decision(ok, reasons)

    cur = report.current.metrics

    def better_by(m: str) -> float | None:
        a, b = cand.get(m), cur.get(m)
        if a is None or b is None:
            return None
        return (b - a) if m in LOWER_IS_BETTER else (a - b)

    gain = better_by(gate.primary)
    margin = gate.min_improvement.get(gate.primary, 0.0)
    if gain is None:
        ok = False
        reasons.append(f"{gate.primary} (primary): not measured for both models, cannot compare")
    elif gain >= margin and gain > 0:
        reasons.append(f"{gate.primary} (primary): {_fmt(cand.get(gate.primary))} vs {_fmt(cur.get(gate.primary))}, "
                       f"better by {gain:.4f} >= margin {margin}")
    else:
        ok = False
        reasons.append(f"{gate.primary} (primary): {_fmt(cand.get(gate.primary))} vs {_fmt(cur.get(gate.primary))}, "
                       f"improvement {gain:.4f} < required margin {margin}")
    for m, tol in gate.tolerance.items():
        if m == gate.primary:
            continue
        d = better_by(m)
        if d is None:
            reasons.append(f"{m}: not measured for both models, skipped")
        elif d < -tol:
            ok = False
            reasons.append(f"{m}: {_fmt(cand.get(m))} vs {_fmt(cur.get(m))}, worse by {-d:.4f} > tolerance {tol}")
        else:
            reasons.append(f"{m}: {_fmt(cand.get(m))} vs {_fmt(cur.get(m))}, within tolerance {tol}")
    return Decision(ok, reasons)


# --- writing the report ----------------------------------------------------------------------

def write_report(report: GateReport, decision: Decision, out_dir: Path) -> dict[str, Path]:
    """Write ``gate.json``, ``gate.md`` (current vs candidate per metric) and ``gate.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "gate.json", "md": out / "gate.md", "png": out / "gate.png"}
    payload = {"decision": asdict(decision), "report": asdict(report)}
    paths["json"].write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    cand, cur = report.candidate, report.current
    lines = [f"# Evaluation gate: {'PROMOTE' if decision.promote else 'DO NOT PROMOTE'}", "",
             f"- candidate: `{cand.model}`", f"- current: `{cur.model}`" if cur else "- current: none",
             f"- {cand.conversations} conversations, {cand.turns} agent turns, {cand.reply_tokens} reply tokens",
             f"- created: {report.created_at}", "",
             "| metric | better | current | candidate | change |", "|---|---|---|---|---|"]
    for m in METRICS:
        a = cand.metrics.get(m)
        b = cur.metrics.get(m) if cur else None
        change = f"{a - b:+.4f}" if a is not None and b is not None else "n/a"
        lines.append(f"| {m} | {'lower' if m in LOWER_IS_BETTER else 'higher'} | {_fmt(b)} | {_fmt(a)} | {change} |")
    lines += ["", "## Reasons", "", *[f"- {r}" for r in decision.reasons]]
    if cand.examples:
        lines += ["", "## Candidate examples", ""]
        for ex in cand.examples:
            lines += [f"- `{ex.conversation_id}` turn {ex.turn} (ROUGE-L {ex.rouge_l:.2f}, cosine {ex.cosine:.2f})",
                      f"  - real: {ex.reference[:200]!r}", f"  - model: {ex.generated[:200]!r}"]
    paths["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")

    # Figure + Agg canvas directly: no pyplot, no global backend switch in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [m for m in METRICS if cand.metrics.get(m) is not None]
    fig = Figure(figsize=(2.4 * max(1, len(shown)), 3.2))
    FigureCanvasAgg(fig)
    for i, m in enumerate(shown, 1):
        ax = fig.add_subplot(1, len(shown), i)
        bars = [("current", cur.metrics.get(m), "#999999")] if cur is not None else []
        bars = [b for b in [*bars, ("candidate", cand.metrics.get(m), "#2a7ab0")] if b[1] is not None]
        ax.bar([b[0] for b in bars], [float(b[1]) for b in bars], color=[b[2] for b in bars])  # type: ignore[arg-type]
        ax.set_title(panel_title(m), fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(figure_title(decision.promote, decision.reasons, len(shown)), fontsize=10)
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=80)
    return paths
