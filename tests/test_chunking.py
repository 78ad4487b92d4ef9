from knowledge.chunking import chunk_article, split_sections
from knowledge.types import ArticleDraft

BODY = """Intro paragraph about returns.

## Window
You have 30 days.

### Exceptions
Candles cannot be returned once lit.

```
# not a heading inside code
```

## Refunds
""" + " ".join(f"Sentence number {i} about refunds takes a while." for i in range(60))


def test_sections_follow_headings_and_ignore_code_fences():
    sections = split_sections(BODY)
    paths = [tuple(p) for p, _ in sections]
    assert paths == [(), ("Window",), ("Window", "Exceptions"), ("Refunds",)]
    assert "# not a heading" in sections[2][1]


def test_chunks_never_cross_headings_and_respect_max_chars():
    chunks = chunk_article(ArticleDraft("r", "Returns", BODY), max_chars=300)
    assert all(len(c.text) <= 300 for c in chunks)
    headings = [c.heading for c in chunks]
    assert headings[:3] == ["Returns", "Returns > Window", "Returns > Window > Exceptions"]
    refund = [c for c in chunks if c.heading == "Returns > Refunds"]
    assert len(refund) >= 9  # ~3,000 characters split at sentence ends
    assert all(c.text.endswith(".") for c in refund)  # split at sentence ends, not mid-word
    assert all(c.embed_text.startswith(c.heading + "\n") for c in chunks)
    assert [c.ord for c in chunks] == list(range(len(chunks)))


def test_paragraphs_are_packed_together_when_they_fit():
    body = "\n\n".join(f"Short paragraph {i}." for i in range(5))
    (chunk,) = chunk_article(ArticleDraft("p", "P", body), max_chars=900)
    assert chunk.text.count("\n\n") == 4


def test_faq_gives_one_chunk_per_phrasing_plus_answer():
    d = ArticleDraft("f", "Hours?", "Mon-Fri.", questions=("Hours?", "When open?", "Opening times"))
    chunks = chunk_article(d)
    assert [c.kind for c in chunks] == ["question"] * 3 + ["passage"]
    assert [c.text for c in chunks[:3]] == list(d.questions)


def test_run_on_sentence_is_cut_at_whitespace():
    body = "word " * 500
    chunks = chunk_article(ArticleDraft("w", "W", body), max_chars=200)
    assert all(0 < len(c.text) <= 200 for c in chunks)
    assert sum(c.text.count("word") for c in chunks) == 500
