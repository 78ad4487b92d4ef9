from pathlib import Path

import pytest

from botkit.errors import ImportFailed
from knowledge.ingest import read_sources


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def problems(paths, **kw) -> list[str]:
    with pytest.raises(ImportFailed) as err:
        read_sources(paths, **kw)
    return [str(p) for p in err.value.problems]


def test_markdown_front_matter_article_and_faq(tmp_path: Path):
    write(tmp_path / "a.md", "---\nid: returns\ntitle: Returns\ntags: [returns, policy]\n---\n## Window\n30 days.\n")
    write(tmp_path / "b.md",
          "---\nid: faq-hours\nquestions:\n  - When are you open?\n  - Support hours?\n---\nMon-Fri 8-18.\n")
    a, b = sorted(read_sources([tmp_path]), key=lambda d: d.id)
    assert (b.id, b.title, b.tags, b.kind) == ("returns", "Returns", ("returns", "policy"), "article")
    assert "## Window" in b.body
    assert a.kind == "faq" and a.title == "When are you open?"
    assert a.questions == ("When are you open?", "Support hours?")
    assert a.body == "Mon-Fri 8-18."


def test_markdown_without_front_matter_takes_h1_and_filename(tmp_path: Path):
    (d,) = read_sources([write(tmp_path / "Gift Cards.md", "# All about gift cards\n\nThey never expire.\n")])
    assert d.id == "gift-cards" and d.title == "All about gift cards"
    assert d.body.strip() == "They never expire."


def test_text_html_csv_jsonl(tmp_path: Path):
    write(tmp_path / "t.txt", "Shipping to Mars\nWe do not ship to Mars yet.\n")
    write(tmp_path / "h.html", "<html><head><title>Lost parcel</title><script>alert('x')</script></head>"
          "<body><h1>Lost parcel</h1><p>Wait 5 days.</p><h2>Then</h2><p>Contact&nbsp;us &amp; we help.</p>"
          "</body></html>")
    write(tmp_path / "f.csv",
          'id,questions,answer,tags\nfaq-pp,"Do you take PayPal? | PayPal ok?","Yes, PayPal works.",billing;payment\n')
    write(tmp_path / "j.jsonl", '{"id": "j1", "title": "J one", "body": "Body one"}\n\n'
          '{"id": "j2", "questions": ["Q?", "Q2?"], "answer": "A."}\n')
    drafts = {d.id: d for d in read_sources([tmp_path])}
    assert set(drafts) == {"t", "h", "faq-pp", "j1", "j2"}
    assert drafts["t"].title == "Shipping to Mars"
    h = drafts["h"]
    assert h.title == "Lost parcel" and "alert" not in h.body
    assert "## Then" in h.body and "Contact us & we help." in h.body
    assert drafts["faq-pp"].questions == ("Do you take PayPal?", "PayPal ok?")
    assert drafts["faq-pp"].tags == ("billing", "payment") and drafts["faq-pp"].body == "Yes, PayPal works."
    assert drafts["j2"].kind == "faq" and drafts["j2"].source.endswith("j.jsonl:3")


def test_binary_empty_and_bad_utf8_name_file_and_line(tmp_path: Path):
    write(tmp_path / "bin.md", b"\x89PNG\r\n\x1a\n\x00\x00")
    write(tmp_path / "empty.txt", "  \n\n")
    write(tmp_path / "latin1.md", "line one\nline two\ncaf\xe9\n".encode("latin-1"))
    found = problems([tmp_path])
    assert any("bin.md:3: binary data" in p for p in found)
    assert any("empty.txt: empty file" in p for p in found)
    assert any("latin1.md:3: not valid UTF-8 (byte 0xe9" in p for p in found)


def test_malformed_front_matter(tmp_path: Path):
    write(tmp_path / "a.md", "---\nid: a\ntitle: [unclosed\n---\nbody\n")
    write(tmp_path / "b.md", "---\nid: b\ntitle: never closed\nbody\n")
    write(tmp_path / "c.md", "---\nid: c\ntitle: C\ncolour: red\n---\nbody\n")
    found = problems([tmp_path])
    assert any(p.startswith(str(tmp_path / "a.md") + ":") and "malformed front matter" in p for p in found)
    assert any("b.md:1: front matter opened with '---' is never closed" in p for p in found)
    assert any("c.md:1: unknown field(s) colour" in p for p in found)


def test_malformed_csv_rows_and_header(tmp_path: Path):
    write(tmp_path / "a.csv", 'id,title,body\nok,Fine,Body\nshort,Only two\n"bad id!",T,B\n')
    write(tmp_path / "b.csv", "name,text\nx,y\n")
    found = problems([tmp_path])
    assert any("a.csv:3: row has 2 fields, the header has 3" in p for p in found)
    assert any("a.csv:4: bad id 'bad id!'" in p for p in found)
    assert any("b.csv:1: CSV header must have 'id'" in p and "unknown: name, text" in p for p in found)


def test_malformed_jsonl_reports_every_bad_line(tmp_path: Path):
    write(tmp_path / "a.jsonl", '{"id": "a", "title": "A", "body": "x"}\n{broken\n[1, 2]\n{"id": "d", "title": "D"}\n')
    found = problems([tmp_path])
    assert any("a.jsonl:2: malformed JSON" in p for p in found)
    assert any("a.jsonl:3: each line must be a JSON object" in p for p in found)
    assert any("a.jsonl:4: missing 'body'" in p for p in found)
    assert len(found) == 3


def test_duplicate_id_across_files_names_both(tmp_path: Path):
    write(tmp_path / "a.md", "---\nid: same\ntitle: A\n---\nx\n")
    write(tmp_path / "b.jsonl", '{"id": "same", "title": "B", "body": "y"}\n')
    (found,) = problems([tmp_path])
    assert "duplicate id 'same'" in found and "a.md" in found and "b.jsonl:1" in found


def test_too_large_and_unsupported_and_missing(tmp_path: Path):
    big = write(tmp_path / "big.txt", "title\n" + "x" * 5000)
    odd = write(tmp_path / "doc.pdf", b"%PDF")
    found = problems([big, odd, tmp_path / "nope.md"], max_bytes=4096)
    assert any("big.txt: file is 0.0 MB, over the limit" in p and "knowledge.max_file_bytes" in p for p in found)
    assert any("doc.pdf: unsupported file type '.pdf'" in p for p in found)
    assert any("nope.md: no such file or directory" in p for p in found)


def test_hostile_text_is_kept_as_text(tmp_path: Path):
    body = "<script>alert(1)</script> '; DROP TABLE articles; -- \u202e\u0000".replace("\u0000", "")
    (d,) = read_sources([write(tmp_path / "x.jsonl",
                               '{"id": "x", "title": "T", "body": %s}\n' % __import__("json").dumps(body))])
    assert d.body == body.strip()
