"""The evaluation gate on tiny GPT-2 models: a model trained on the held-out replies must win
over the untrained base, and the base must not replace it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from lm_fixtures import kb_section, tiny_adapter_dir, tiny_lm_dir  # noqa: F401 (pytest fixtures)

from botkit.config import LocalLMConfig
from botkit.types import Hit
from training.evaluate import (
    METRICS,
    GateConfig,
    GateReport,
    ModelReport,
    cosine_pairs,
    decide,
    evaluate_candidate,
    hands_off,
    rouge_l,
    write_report,
)
from training.sft import build_examples
from training.types import Message, Transcript


def _first_sentences(text: str, n: int = 2) -> str:
    parts = text.replace("**", "").replace("\n", " ").split(". ")
    return ". ".join(parts[:n]).strip().rstrip(".") + "."


CASES = [
    ("c1", "How long does a refund take?", kb_section("refund-timing"), {}),
    ("c2", "Can I cancel my order?", kb_section("cancel-an-order", "Within the first hour"), {}),
    ("c3", "My parcel never arrived", kb_section("lost-parcel"), {"escalated": True}),
]


def _validation() -> list[Transcript]:
    out = []
    for cid, question, passage, meta in CASES:
        reply = _first_sentences(passage)
        msgs = [Message("customer", question), Message("agent", reply)]
        if meta.get("escalated"):
            msgs += [Message("customer", "That did not help."),
                     Message("agent", "I'm sorry. I'll connect you with a colleague who can look into it.")]
        out.append(Transcript(cid, tuple(msgs), meta=meta))
    return out


VALIDATION = _validation()
PASSAGES = {q: [Hit(cid, q, "article", 0.9, 0.9, 0.0, 0, q, p)] for cid, q, p, _ in CASES}


def passages_for(question: str) -> list[Hit]:
    return PASSAGES.get(question, [])


class BagOfWords:
    """Deterministic stand-in for MiniLM in the gate runs (hashing bag of words, unit rows)."""

    name = "bag-of-words"
    dim = 256

    def start(self) -> None:
        pass

    def embed(self, texts):  # type: ignore[no-untyped-def]
        import zlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


@pytest.fixture(scope="module")
def trained_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The tiny base trained for a few steps on the validation agent replies (plain torch loop,
    loss on the reply tokens only, prompts rendered with the chat template as evaluation does)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine one thread is many times faster for this size
    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir), local_files_only=True)
    # The prompts training builds (system message with the passages, as serving and the gate do).
    batches = [(torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]]))
               for ex in build_examples(VALIDATION, tok, 2048, with_passages=True, retrieve=passages_for)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(40):
        ids, labels = batches[step % len(batches)]
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    torch.set_num_threads(threads)
    dest = tmp_path_factory.mktemp("trained-lm")
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def report(trained_dir: Path, tiny_lm_dir: Path) -> GateReport:  # noqa: F811
    # threads=1: evaluation was ~15x faster than with the default thread count here.
    return evaluate_candidate(LocalLMConfig(model_path=str(trained_dir), threads=1),
                              LocalLMConfig(model_path=str(tiny_lm_dir), threads=1),
                              VALIDATION, passages_for=passages_for, max_conversations=10, max_new_tokens=12,
                              embedder=BagOfWords())


GATE = GateConfig(primary="loss", min_improvement={"loss": 0.5},
                  tolerance={"cosine": 0.05, "rouge_l": 0.05, "escalation_agreement": 0.34})


def test_trained_candidate_beats_base_and_is_promoted(report: GateReport) -> None:
    cand, cur = report.candidate, report.current
    assert cur is not None
    assert cand.turns == cur.turns == 4 and cand.conversations == 3 and cand.reply_tokens > 20
    assert cand.metrics["loss"] < cur.metrics["loss"] - 1.0, (cand.metrics, cur.metrics)
    assert cand.metrics["perplexity"] < cur.metrics["perplexity"]
    for m in METRICS:
        assert cand.metrics[m] is not None, m
    assert 0.0 <= cand.metrics["grounding_rate"] <= 1.0  # type: ignore[operator]
    assert 0.0 <= cand.metrics["rouge_l"] <= 1.0  # type: ignore[operator]
    decision = decide(report, GATE)
    assert decision.promote, decision.reasons
    assert decision.reasons[0].startswith("loss (primary)") and "better by" in decision.reasons[0]


def test_worse_candidate_is_refused(report: GateReport) -> None:
    # The same measurements with roles swapped: the untrained base as candidate vs the trained model.
    swapped = dataclasses.replace(report, candidate=report.current, current=report.candidate)
    decision = decide(swapped, GATE)
    assert not decision.promote
    assert "improvement" in decision.reasons[0] and "< required margin" in decision.reasons[0]


def test_no_current_model_uses_floors(report: GateReport) -> None:
    alone = dataclasses.replace(report, current=None)
    loss = report.candidate.metrics["loss"]
    assert decide(alone, GateConfig(floors={"loss": loss + 0.1})).promote
    refused = decide(alone, GateConfig(floors={"loss": loss - 0.1}))
    assert not refused.promote and "fails floor <=" in refused.reasons[0]


def _fake(model: str, **metrics: float | None) -> ModelReport:
    base: dict[str, float | None] = {"loss": 2.0, "perplexity": 7.4, "cosine": 0.6, "rouge_l": 0.3,
                                     "grounding_rate": None, "escalation_agreement": 0.9}
    return ModelReport(model, {**base, **metrics}, conversations=5, turns=9, reply_tokens=300)


def test_decide_tolerance_and_margin() -> None:
    gate = GateConfig(primary="loss", min_improvement={"loss": 0.1},
                      tolerance={"rouge_l": 0.02, "grounding_rate": 0.05})
    cur = _fake("cur")
    better = GateReport(_fake("cand", loss=1.8), cur, "t")
    assert decide(better, gate).promote
    # Better loss but ROUGE-L fell by more than the tolerance: refused, and the reason says why.
    regressed = decide(GateReport(_fake("cand", loss=1.8, rouge_l=0.25), cur, "t"), gate)
    assert not regressed.promote and any(r.startswith("rouge_l") and "worse by 0.0500" in r for r in regressed.reasons)
    # Within tolerance is fine; an improvement below the margin is not.
    assert decide(GateReport(_fake("cand", loss=1.8, rouge_l=0.29), cur, "t"), gate).promote
    assert not decide(GateReport(_fake("cand", loss=1.95), cur, "t"), gate).promote
    # A metric measured for neither model is skipped, not failed.
    assert any("grounding_rate: not measured" in r for r in decide(better, gate).reasons)
    with pytest.raises(ValueError, match="unknown metric"):
        GateConfig(tolerance={"bleu": 0.1})


def test_identical_replies_score_one(embedder) -> None:  # type: ignore[no-untyped-def]
    text = "Refunds reach your original payment method within 5-10 business days."
    assert rouge_l(text, text) == pytest.approx(1.0)
    assert rouge_l(text, "Gift cards never expire.") < 0.3
    assert rouge_l(text, "") == 0.0
    same, other = cosine_pairs(embedder, [text, text], [text, "Our candles burn for forty hours."])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert other < 0.5


def test_handoff_detection() -> None:
    assert hands_off("I'll connect you with a colleague who can help.")
    assert hands_off("Let me transfer you to our returns team.")
    assert not hands_off("Refunds take 5-10 business days.")
    t = VALIDATION[2]
    assert t.meta["escalated"] and hands_off(t.messages[-1].text)


def test_write_report(report: GateReport, tmp_path: Path) -> None:
    decision = decide(report, GATE)
    paths = write_report(report, decision, tmp_path / "gate")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["md"].read_text()
    assert md.startswith("# Evaluation gate: PROMOTE")
    assert "| metric | better | current | candidate | change |" in md
    cur_loss, cand_loss = report.current.metrics["loss"], report.candidate.metrics["loss"]  # type: ignore[union-attr]
    assert f"| loss | lower | {cur_loss:.4f} | {cand_loss:.4f} | {cand_loss - cur_loss:+.4f} |" in md
    data = json.loads(paths["json"].read_text())
    assert data["decision"]["promote"] is True
    assert data["report"]["candidate"]["metrics"]["loss"] == pytest.approx(cand_loss)
    assert data["report"]["candidate"]["examples"][0]["reference"] == VALIDATION[0].messages[1].text


def test_adapter_candidate_is_loaded(tiny_lm_dir: Path, tiny_adapter_dir: Path) -> None:  # noqa: F811
    base = LocalLMConfig(model_path=str(tiny_lm_dir), threads=1)
    with_adapter = base.model_copy(update={"adapter_path": str(tiny_adapter_dir)})
    report = evaluate_candidate(with_adapter, base, VALIDATION, passages_for=None, max_conversations=1,
                                max_new_tokens=4, embedder=BagOfWords())
    assert report.candidate.model.endswith(f"+ {tiny_adapter_dir}") and report.candidate.turns == 1
    assert report.candidate.metrics["grounding_rate"] is None  # no passages_for: not measured
    # The random adapter changes the model, so its loss differs from the base's.
    assert report.candidate.metrics["loss"] != pytest.approx(report.current.metrics["loss"])  # type: ignore[union-attr]
