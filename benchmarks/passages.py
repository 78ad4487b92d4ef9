"""The right passage on the demo help centre: is the section shown the one that answers?

benchmarks/data/passages.jsonl holds customer questions, each labelled with the article and the
section (its ``##`` heading) that answers it; they were written from the demo's list of
headings after knowledge/passages.py's weights were set, and no weight was changed after
(so the whole file is a test split). For each question the demo KB (MiniLM + FAISS + BM25) is
searched; when the top article is the labelled one, the section of the passage it shows is
compared with the label, in the same run:

* before: the search's own best chunk (hybrid score over the whole KB; a passage under 200
  characters ran on into whatever chunk followed, even another section);
* cosine only: the article's chunks re-ranked by cosine alone (every feature weight 0);
* now: :func:`knowledge.passages.refine_passage` with its default weights;
* now without <feature>: the default weights with that one feature off (an ablation).

"clean" counts passages that hold the labelled section and no other section's text. Also
printed: acc@1 of demo/eval/queries.jsonl with the refinement off and on (it changes only the
passage, never the article ranking, so the two must be equal).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields, replace
from typing import Any

from benchmarks.common import REPO, fmt, log, parser, print_footer, print_header, print_table, workdir

CASES = REPO / "benchmarks" / "data" / "passages.jsonl"


def main() -> None:
    parser(__doc__.splitlines()[0]).parse_args()
    import knowledge.base
    from botkit.project import Project
    from knowledge.base import KnowledgeBase
    from knowledge.evaluate import evaluate_retrieval, load_queries
    from knowledge.passages import DEFAULT_WEIGHTS, PassageWeights, refine_passage

    print_header("the right passage: the section shown for a question (demo help centre)",
                 ["labels: benchmarks/data/passages.jsonl, written after the weights were set (test only)"])
    root = workdir() / "demo"
    shutil.copytree(REPO / "demo", root, ignore=shutil.ignore_patterns(".botkit"))
    cases = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    kb = KnowledgeBase.open(Project.load(root), progress=False)
    kb.start()
    kb.import_paths([root / "kb"], author="benchmark")

    refine = knowledge.base.refine_passage
    off = {f.name: 0.0 for f in fields(PassageWeights)}
    variants: dict[str, PassageWeights | None] = {"before": None, "cosine only": PassageWeights(**off),
                                                  "now": DEFAULT_WEIGHTS}
    variants |= {f"now without {f.name}": replace(DEFAULT_WEIGHTS, **{f.name: 0.0}) for f in fields(PassageWeights)}
    knowledge.base.refine_passage = lambda query, qvec, hit, *a, **k: hit  # type: ignore[assignment]
    try:
        found = []
        for case in cases:
            hit = kb.search(case["query"]).best
            found.append(hit if hit is not None and hit.article_id == case["article"] else None)
        qvecs = kb.embedder.embed([c["query"] for c in cases])
        queries = load_queries(root / "eval" / "queries.jsonl")
        acc_off = evaluate_retrieval(kb, queries)["accuracy_at_1"]
    finally:
        knowledge.base.refine_passage = refine  # type: ignore[assignment]
    acc_on = evaluate_retrieval(kb, queries)["accuracy_at_1"]

    bodies = {c["article"]: kb.store.article_chunks(c["article"]) for c in cases}
    rows: list[list[Any]] = []
    for name, weights in variants.items():
        right = clean = 0
        for case, hit, qvec in zip(cases, found, qvecs):
            if hit is None:
                continue
            shown = hit if weights is None else refine_passage(case["query"], qvec, hit, kb.store, kb.embedder.name,
                                                               weights)
            section = f"{hit.title} > {case['section']}"
            ok = shown.heading == section or shown.heading.startswith(section + " > ")
            right += ok
            others = [c.text for c in bodies[case["article"]] if c.kind == "passage" and c.heading != section
                      and not c.heading.startswith(section + " > ")]
            clean += ok and not any(o in shown.passage for o in others)
            if name in ("before", "now") and not ok:
                log(f"{name}: {case['query']!r} -> {shown.heading!r} (wanted {case['section']!r})")
        n = sum(h is not None for h in found)
        rows.append([name, n, right / n if n else None, clean / n if n else None])
    kb.close()
    log(f"{sum(h is None for h in found)} of {len(cases)} questions found another article first (not scored)")
    print_table(["passage choice", "scored", "right section", "clean"], rows)
    print_table(["demo/eval/queries.jsonl", "acc@1"], [["refinement off", acc_off], ["refinement on", acc_on]])
    print(f"right section: the shown passage's heading is the labelled one; clean: and it holds no other "
          f"section's text. acc@1 off {fmt(acc_off)}, on {fmt(acc_on)}.")
    print_footer()


if __name__ == "__main__":
    main()
