"""Read knowledge files into article drafts: Markdown (with YAML front matter), plain text,
HTML, CSV and JSONL.

Reading never writes anything. Every problem in every file is collected with its file and
line, and if there is any, :class:`ImportFailed` lists them all and nothing is imported.
"""

from __future__ import annotations

import csv
import io
import json
import re
import reprlib
from collections.abc import Callable, Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from botkit.errors import ImportFailed, InputProblem
from knowledge.types import ID_PATTERN, ArticleDraft

MARKDOWN = {".md", ".markdown"}
SUPPORTED = MARKDOWN | {".txt", ".html", ".htm", ".csv", ".jsonl"}
ENTRY_KEYS = {"id", "title", "body", "answer", "tags", "questions", "question", "lang"}
# ``lang: zh`` (front matter, CSV column, JSON key) is kept as the tag ``lang:zh`` (knowledge/languages.py)
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
MAX_TITLE = 300
MAX_QUESTIONS = 200
MAX_FRONT_MATTER_DEPTH = 32  # PyYAML takes time quadratic in the nesting: 3,000 '[' took 5 s
# An unpaired UTF-16 surrogate: JSON and YAML escapes can spell one (\ud800), UTF-8 cannot store it.
_SURROGATE = re.compile("[\ud800-\udfff]")
# A bounded repr for messages: a YAML alias bomb (lists of lists of the same list) has a full repr
# of billions of characters, which formatting first and cutting afterwards still builds.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 40, 40


class _Problems(Exception):
    def __init__(self, problems: list[InputProblem]):
        self.problems = problems


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:100] or "article"


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, InputProblem | None]]:
    """Expand directories (recursively, sorted) into supported files."""
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                hidden = any(part.startswith(".") for part in child.parts[len(path.parts):])
                if child.suffix.lower() in SUPPORTED and not hidden:
                    yield child, None
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED:
                yield path, None
            else:
                yield path, InputProblem(str(path), None, f"unsupported file type {path.suffix or '(none)'!r}; "
                                         f"botkit imports {', '.join(sorted(SUPPORTED))}")
        else:
            yield path, InputProblem(str(path), None, "no such file or directory")


def read_text(path: Path, max_bytes: int) -> str:
    """Read a file as UTF-8 text, rejecting huge, empty, binary and mis-encoded files."""
    size = path.stat().st_size
    if size > max_bytes:
        raise _Problems([InputProblem(str(path), None,
            f"file is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB "
            "(split it, or raise knowledge.max_file_bytes in bot.yaml)")])
    data = path.read_bytes()
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _Problems([InputProblem(str(path), data[:nul].count(b"\n") + 1,
            "binary data (NUL byte); botkit imports UTF-8 text files only")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _Problems([InputProblem(str(path), line,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8")]) from None
    if not text.strip():
        raise _Problems([InputProblem(str(path), None, "empty file")])
    return text


def _str_list(value: Any, sep: str, what: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = [v.strip() for v in value.split(sep)]
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        items = [str(v).strip() for v in value]
    else:
        raise ValueError(f"{what} must be a list of strings or a {sep!r}-separated string, got {_SHORT.repr(value)}")
    return tuple(v for v in items if v)


def make_draft(fields: dict[str, Any], source: str, default_id: str | None = None,
               tag_sep: str = ",", question_sep: str = "|") -> ArticleDraft:
    """Validate one entry's fields into a draft. Raises ValueError with a readable reason."""
    unknown = set(fields) - ENTRY_KEYS
    if unknown:
        # str(): YAML front matter may have keys that are numbers, dates or null
        raise ValueError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))} "
                         f"(allowed: {', '.join(sorted(ENTRY_KEYS))})")
    for key, value in fields.items():
        if key not in ("tags", "questions") and value is not None and not isinstance(value, (str, int, float)):
            raise ValueError(f"field {key!r} must be text, got {type(value).__name__}")
    raw_id = fields.get("id")
    art_id = str(raw_id).strip() if raw_id not in (None, "") else default_id
    if not art_id:
        raise ValueError("missing 'id'")
    if not ID_PATTERN.match(art_id):
        raise ValueError(f"bad id {art_id!r}: use letters, digits, '.', '_' or '-' "
                         "(at most 128, starting with a letter or digit)")
    questions = _str_list(fields.get("questions", fields.get("question")), question_sep, "questions")
    if len(questions) > MAX_QUESTIONS:
        raise ValueError(f"{len(questions)} questions; at most {MAX_QUESTIONS} phrasings per FAQ entry")
    body = fields.get("body", fields.get("answer"))
    body = "" if body is None else str(body).strip()
    title = str(fields.get("title") or "").strip() or (questions[0] if questions else "")
    if not title:
        raise ValueError("missing 'title' (or, for an FAQ entry, 'questions')")
    if len(title) > MAX_TITLE:
        raise ValueError(f"title is {len(title)} characters; at most {MAX_TITLE}")
    if not body:
        raise ValueError("missing 'body' (or 'answer')")
    tags = _str_list(fields.get("tags"), tag_sep, "tags")
    lang = fields.get("lang")
    if lang not in (None, ""):
        lang = str(lang).strip()
        if not _LANG.match(lang):
            raise ValueError(f"bad lang {lang!r}: use an ISO 639-1 code such as zh, en or pt-BR")
        tags = tuple(t for t in tags if not t.startswith("lang:")) + (f"lang:{lang.split('-')[0]}",)
    for what, text in (("id", art_id), ("title", title), ("body", body), *(("tags", t) for t in tags),
                       *(("questions", q) for q in questions)):
        if _SURROGATE.search(text):
            raise ValueError(f"{what} has an unpaired UTF-16 surrogate (a cut emoji?): {text[:60]!r}; "
                             "fix or remove it")
    return ArticleDraft(art_id, title, body, tags, questions, source)


# -- formats -----------------------------------------------------------------------------------

def _bracket_depth(text: str) -> int:
    """The deepest nesting of [ and { (brackets inside quotes count too: an over-estimate)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def parse_markdown(path: Path, text: str) -> list[ArticleDraft]:
    fields: dict[str, Any] = {}
    body = text
    body_line = 1
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
        if end is None:
            raise _Problems([InputProblem(str(path), 1, "front matter opened with '---' is never closed")])
        front = "\n".join(lines[1:end])
        if _bracket_depth(front) > MAX_FRONT_MATTER_DEPTH:
            raise _Problems([InputProblem(str(path), 2, f"front matter is nested more than {MAX_FRONT_MATTER_DEPTH} "
                                          "brackets deep; it holds id, title, tags and questions")])
        try:
            meta = yaml.safe_load(front)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 2 if mark is not None else 1
            raise _Problems([InputProblem(str(path), line,
                f"malformed front matter: {getattr(exc, 'problem', None) or exc}")]) from None
        except (ValueError, RecursionError) as exc:  # a date that does not exist (2024-02-30), deep nesting
            raise _Problems([InputProblem(str(path), 2, f"malformed front matter: {exc}; put values that are "
                                          "not meant as dates or numbers in quotes")]) from None
        if meta is not None and not isinstance(meta, dict):
            raise _Problems([InputProblem(str(path), 2,
                                          "front matter must be a mapping of keys (id, title, tags, questions)")])
        fields = dict(meta or {})
        if "body" in fields or "answer" in fields:
            raise _Problems([InputProblem(str(path), 2, "put the body below the front matter, not in it")])
        body = "\n".join(lines[end + 1:])
        body_line = end + 2
    if not fields.get("title"):
        m = re.search(r"^#\s+(.+)$", body, flags=re.M)
        if m:
            fields["title"] = m.group(1).strip()
            body = body[: m.start()] + body[m.end():]
    if not fields.get("title") and not fields.get("questions"):
        fields["title"] = path.stem.replace("-", " ").replace("_", " ").strip().capitalize()
    fields["body"] = body
    try:
        return [make_draft(fields, f"{path}:{body_line}", default_id=slugify(path.stem))]
    except ValueError as exc:
        raise _Problems([InputProblem(str(path), 1, str(exc))]) from None


def parse_text(path: Path, text: str) -> list[ArticleDraft]:
    lines = text.strip().splitlines()
    title, body = lines[0].strip(), "\n".join(lines[1:]).strip() or lines[0].strip()
    try:
        return [make_draft({"title": title, "body": body}, f"{path}:1", default_id=slugify(path.stem))]
    except ValueError as exc:
        raise _Problems([InputProblem(str(path), 1, str(exc))]) from None


class _HtmlToMarkdown(HTMLParser):
    """Keeps the text and the heading structure of an HTML page; drops scripts and styles."""

    BLOCK = {"p", "div", "li", "br", "tr", "section", "article", "table", "ul", "ol", "blockquote", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._heading = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = int(tag[1])
            self.out.append("\n\n" + "#" * self._heading + " ")
        elif tag in self.BLOCK:
            self.out.append("\n\n" if tag != "li" else "\n- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = 0
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title += data
            return
        self.out.append(re.sub(r"\s+", " ", data) if not self._heading else data.strip())


def parse_html(path: Path, text: str) -> list[ArticleDraft]:
    parser = _HtmlToMarkdown()
    try:
        parser.feed(text)
        parser.close()
    except AssertionError as exc:  # html.parser's way of refusing a bad declaration, such as '<![0'
        raise _Problems([InputProblem(str(path), parser.getpos()[0], f"malformed HTML: {exc}")]) from None
    body = re.sub(r"\n{3,}", "\n\n", "".join(parser.out)).strip()
    body = "\n".join(line.strip() for line in body.splitlines())
    if not body:
        raise _Problems([InputProblem(str(path), None, "no text found in the HTML page")])
    fields: dict[str, Any] = {"body": body}
    m = re.search(r"^#\s+(.+)$", body, flags=re.M)
    if parser.title.strip():
        fields["title"] = parser.title.strip()
    elif m:
        fields["title"] = m.group(1).strip()
    if m and fields.get("title") == m.group(1).strip():
        fields["body"] = (body[: m.start()] + body[m.end():]).strip() or body
    try:
        return [make_draft(fields, f"{path}:1", default_id=slugify(path.stem))]
    except ValueError as exc:
        raise _Problems([InputProblem(str(path), 1, str(exc))]) from None


def parse_csv(path: Path, text: str) -> list[ArticleDraft]:
    problems: list[InputProblem] = []
    drafts: list[ArticleDraft] = []
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise _Problems([InputProblem(str(path), 1, f"malformed CSV header: {exc}")]) from None
    unknown = [h for h in header if h not in ENTRY_KEYS]
    if unknown or "id" not in header or not ({"body", "answer"} & set(header)):
        raise _Problems([InputProblem(str(path), 1,
            f"CSV header must have 'id' and 'body' or 'answer', optionally title, tags, questions; "
            f"got {', '.join(header) or '(nothing)'}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))])
    reader.fieldnames = header
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(InputProblem(str(path), reader.line_num, f"malformed CSV: {exc}"))
            break  # the csv module cannot resynchronise after a broken quote
        start = line + 1
        line = reader.line_num
        if None in row or any(v is None for v in row.values()):
            problems.append(InputProblem(str(path), start,
                f"row has {len([v for v in row.values() if v is not None]) + len(row.get(None) or [])} fields, "
                f"the header has {len(header)}"))
            continue
        try:
            drafts.append(make_draft(dict(row), f"{path}:{start}",
                                     tag_sep=";" if ";" in (row.get("tags") or "") else ","))
        except ValueError as exc:
            problems.append(InputProblem(str(path), start, str(exc)))
    if problems:
        raise _Problems(problems)
    if not drafts:
        raise _Problems([InputProblem(str(path), None, "CSV has a header but no rows")])
    return drafts


def parse_jsonl(path: Path, text: str) -> list[ArticleDraft]:
    problems: list[InputProblem] = []
    drafts: list[ArticleDraft] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(InputProblem(str(path), lineno, f"malformed JSON: {exc.msg} at column {exc.colno}"))
            continue
        except (ValueError, RecursionError) as exc:  # Python refuses these where JSON itself has no limit
            why = "nested too deeply" if isinstance(exc, RecursionError) else "a number over 4300 digits long"
            problems.append(InputProblem(str(path), lineno, f"unreadable JSON: {why}; write long values as strings"))
            continue
        if not isinstance(obj, dict):
            problems.append(InputProblem(str(path), lineno,
                                         f"each line must be a JSON object, got {type(obj).__name__}"))
            continue
        try:
            drafts.append(make_draft(obj, f"{path}:{lineno}"))
        except ValueError as exc:
            problems.append(InputProblem(str(path), lineno, str(exc)))
    if problems:
        raise _Problems(problems)
    return drafts


PARSERS: dict[str, Callable[[Path, str], list[ArticleDraft]]] = {
    ".md": parse_markdown, ".markdown": parse_markdown, ".txt": parse_text,
    ".html": parse_html, ".htm": parse_html, ".csv": parse_csv, ".jsonl": parse_jsonl,
}


def read_sources(paths: Iterable[str | Path], max_bytes: int = 10 * 1024 * 1024,
                 progress: bool | None = None) -> list[ArticleDraft]:
    """Parse every file under ``paths``; raise ImportFailed listing all problems, or return all drafts."""
    from tqdm import tqdm

    problems: list[InputProblem] = []
    drafts: list[ArticleDraft] = []
    files = list(iter_files(Path(p) for p in paths))
    for path, problem in tqdm(files, desc="reading", unit="file", disable=progress is False or len(files) < 50,
                              leave=False):
        if problem is not None:
            problems.append(problem)
            continue
        try:
            drafts.extend(PARSERS[path.suffix.lower()](path, read_text(path, max_bytes)))
        except _Problems as exc:
            problems.extend(exc.problems)
        except OSError as exc:
            problems.append(InputProblem(str(path), None, f"cannot read: {exc.strerror or exc}"))
    if not files:
        problems.append(InputProblem(", ".join(str(p) for p in paths) or "(no paths)", None, "no files to import"))
    seen: dict[str, str] = {}
    for d in drafts:
        if d.id in seen:
            file, _, line = (d.source or "").rpartition(":")
            problems.append(InputProblem(file or str(d.source), int(line) if line.isdigit() else None,
                                         f"duplicate id {d.id!r} (first defined at {seen[d.id]})"))
        else:
            seen[d.id] = d.source or "?"
    if problems:
        raise ImportFailed(problems)
    return drafts
