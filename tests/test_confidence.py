"""Calibrated confidence (knowledge/confidence.py, knowledge/calibrate.py) and the learned router
(knowledge/router.py): probabilities in [0, 1], the default mapping keeps the old threshold rule,
the fit separates answerable from off-topic, the router fixes a nearest-neighbour confusion, and
on the demo KB (MiniLM, slow) off-topic questions decline, paraphrases answer and an edit refits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knowledge.confidence import Calibration, feature_vector, fit, out_of_domain_questions
from knowledge.router import Router, eligible, train
from knowledge.types import ArticleDraft
from tests.conftest import open_kb


def _features(rng: np.random.Generator, n: int, score: float) -> np.ndarray:
    return np.vstack([feature_vector(s, s - 0.1, 0.3, 0.1, True, 6, False, 0.0)
                      for s in rng.normal(score, 0.08, n)])


def test_fitted_confidence_is_a_probability_that_separates_answerable_from_off_topic(tmp_path: Path):
    rng = np.random.default_rng(0)
    X = np.vstack([_features(rng, 200, 0.75), _features(rng, 200, 0.35)])
    y = np.r_[np.ones(200), np.zeros(200)]
    cal = fit(X, y, threshold=0.45, fingerprint="fp")
    assert cal.fitted
    p = cal.batch(np.vstack([X, feature_vector(5.0, 5, 1, 5, True, 1, True, 1), feature_vector(-5, -5, 0, 0, False,
                                                                                                  99, False, 0)]))
    assert np.all((p >= 0) & (p <= 1))
    assert p[:200].mean() > 0.8 and p[200:400].mean() < 0.2
    cal.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert again is not None and again.fingerprint == "fp"
    assert np.allclose(again.batch(X), cal.batch(X))


def test_too_little_data_falls_back_to_the_threshold_rule():
    rng = np.random.default_rng(1)
    cal = fit(_features(rng, 10, 0.8), np.ones(10), threshold=0.45)
    assert not cal.fitted  # 10 positives and no negatives: nothing to fit
    at = [cal.confidence(feature_vector(s, s, 0, 0, False, 3, False, 0)) for s in (0.30, 0.4499, 0.45, 0.60, 1.3)]
    assert [c >= 0.5 for c in at] == [False, False, True, True, True]  # min_confidence 0.5 == score >= threshold
    assert all(0.0 <= c <= 1.0 for c in at)


def test_out_of_domain_questions_ship_with_botkit():
    questions = out_of_domain_questions()
    assert len(questions) >= 200 and len(set(questions)) == len(questions)
    assert not any(q.startswith("#") for q in questions)


def test_router_separates_entries_that_nearest_neighbour_confuses():
    """Entry A has many phrasings around one direction, entry B a stray phrasing close to A's
    region: the query (in A's region, nearest to B's stray) goes to B by 1-NN, to A by the router."""
    rng = np.random.default_rng(2)
    dim = 8  # far more phrasings than dimensions: a linear model cannot isolate one stray
    a, b = np.eye(dim)[0], np.eye(dim)[1]

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    A = unit(a + rng.normal(0, 0.35, (200, dim)))
    B = unit(b + rng.normal(0, 0.35, (200, dim)))
    query = unit(a + 0.3 * b + rng.normal(0, 0.05, dim))
    stray = unit(query + rng.normal(0, 0.02, dim))  # one B phrasing written like an A question
    X = np.vstack([A, B, stray[None]]).astype(np.float32)
    labels = ["A"] * 200 + ["B"] * 201
    nearest = labels[int(np.argmax(X @ query))]
    assert nearest == "B"  # dense retrieval (best phrasing per entry) picks the wrong entry
    router = train(X, labels)
    p = router.proba(query[None])[0]
    assert router.classes[int(np.argmax(p))] == "A"
    assert np.isclose(p.sum(), 1.0) and np.all(p >= 0)


def test_router_round_trips_and_auto_means_faq_heavy(tmp_path: Path):
    X = np.eye(4, dtype=np.float32)
    r = train(X, ["a", "b", "c", "d"], steps=20, fingerprint="f")
    r.save(tmp_path / "router.npz")
    again = Router.load(tmp_path / "router.npz")
    assert again is not None and again.classes == r.classes and again.fingerprint == "f"
    assert np.allclose(again.proba(X), r.proba(X))
    assert eligible([3] * 10 + [0] * 5, 10)  # FAQ-heavy
    assert not eligible([3] * 10 + [0] * 30, 10)  # the demo's shape: mostly articles
    assert not eligible([3] * 5, 10)


# -- the demo KB (MiniLM) ----------------------------------------------------------------------
OFF_TOPIC = ["Do you sell dog beds?", "will it rain in seattle tomorrow"]
FOUNDED = "Who founded Tallow & Pine, and in what year?"


@pytest.mark.slow
def test_demo_kb_is_calibrated_and_declines_off_topic_questions(demo_kb):
    assert demo_kb.calibration is not None and demo_kb.calibration.fitted  # from the KB alone, at import
    assert demo_kb.models_version == demo_kb.indexed_version
    for q in OFF_TOPIC:
        r = demo_kb.search(q)
        assert r.confidence is not None and 0.0 <= r.confidence < r.min_confidence and not r.answered, (q, r.confidence)
    paraphrase = demo_kb.search("is it possible to check out using my paypal account")
    assert paraphrase.answered and paraphrase.hits[0].article_id == "faq-paypal"
    assert 0.5 <= (paraphrase.confidence or 0) <= 1.0


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="a question that names the company scores like an answerable one; "
                   "the KB-made brand negatives lower it (0.83 -> 0.72) but not under 0.5 (docs/confidence.md)")
def test_demo_kb_declines_a_question_about_the_company_itself(demo_kb):
    assert not demo_kb.search(FOUNDED).answered


@pytest.mark.slow
def test_an_edit_refits_the_calibration_and_a_restart_reuses_it(demo_dir: Path, embedder):
    kb = open_kb(demo_dir, embedder)
    kb.start()
    try:
        before = kb.calibration
        assert before is not None and not kb.search("Do you sell dog beds?").answered
        kb.upsert([ArticleDraft(id="faq-pet-beds", title="Pet beds", body="Yes: our Pine Nest dog bed comes in "
                                "three sizes, with a washable linen cover.",
                                questions=("Do you sell dog beds?", "Do you have beds for pets?",
                                           "Can I buy a bed for my cat?"))])
        assert kb.models_version == kb.indexed_version and kb.calibration is not None
        assert kb.calibration.fingerprint != before.fingerprint  # refitted for the new KB version
        r = kb.search("do you sell a bed for my dog")
        assert r.answered and r.hits[0].article_id == "faq-pet-beds"
        stored = (demo_dir / ".botkit" / "index" / "confidence.json").stat().st_mtime_ns
        fitted = kb.calibration
    finally:
        kb.close()
    kb = open_kb(demo_dir, embedder)
    kb.start()
    try:  # a restart with nothing changed loads the stored fit
        assert kb.calibration == fitted
        assert (demo_dir / ".botkit" / "index" / "confidence.json").stat().st_mtime_ns == stored
    finally:
        kb.close()
