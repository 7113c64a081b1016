"""Text extraction and input reading for the cleaning pipeline: HTML -> text, a WARC reader, and document readers
for .txt, JSONL(.gz), WARC(.gz) and .html files, which report bad input instead of stopping on it.

- ``html_to_text``: the standard library's HTMLParser; the text of script, style, nav, footer, form (and a few
  more non-content elements) is dropped, and that of a header unless it is long; block elements become line or
  paragraph breaks.
- ``iter_warc``: WARC/1.0 and 1.1 records from a (multi-member gzip) WARC file; ``warc_html_pages`` keeps the
  HTTP responses whose payload is HTML, with the HTTP chunked transfer and gzip/deflate content encodings undone.
- ``read_documents``: every document of a list of files or folders, each with its origin ("file:line", or
  "file#record" for WARC). Invalid UTF-8, a truncated gzip, a malformed JSON line or a record without a "text"
  string is recorded as an ``Issue`` (file, line, what) and reading goes on, unless ``strict``.

    from nanotrain.extract import read_documents
    issues = []
    for doc in read_documents(["../shared/data/web_warc_dolma"], issues):
        print(doc.origin, doc.record.get("url"), len((doc.html or doc.record["text"])))
"""
from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from nanotrain.errors import DataError

# ---------------------------------------------------------------------------------------------------------------
# HTML -> text

# Elements whose content is not the page's text: code, styling, navigation and page chrome, forms, embedded media.
SKIP_TAGS = {"script", "style", "noscript", "template", "head", "nav", "footer", "aside", "form",
             "button", "select", "textarea", "svg", "math", "iframe", "object", "canvas"}
# A <header> is page chrome (logo, menu, search) too, but some site builders put a whole article in one, so a
# header's text is kept when it is long enough to be content.
HEADER_MIN_WORDS = 50
# Elements that start a new paragraph (blank line) or a new line.
PARAGRAPH_TAGS = {"p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl",
                  "table", "blockquote", "pre", "figure", "figcaption", "hr", "address", "details", "summary",
                  "fieldset", "center", "body"}
LINE_TAGS = {"br", "li", "tr", "dt", "dd", "caption", "option"}
CELL_TAGS = {"td", "th"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)  # &amp; &#8217; ... arrive already decoded in handle_data
        self.parts: list[str] = []
        self.skip_depth = 0  # > 0 while inside a SKIP_TAGS element
        self.pre_depth = 0   # > 0 inside <pre>: its line breaks are content
        self.headers: list[int] = []  # where in self.parts each open <header> began

    def handle_starttag(self, tag, attrs):
        if tag in SKIP_TAGS and tag not in VOID_TAGS:
            self.skip_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        elif tag == "header" and not self.skip_depth:
            self.headers.append(len(self.parts))
        self._break(tag)

    def handle_startendtag(self, tag, attrs):  # <br/>: a break, and never opens a skipped element
        self._break(tag)

    def handle_endtag(self, tag):
        if tag in SKIP_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        elif tag == "header" and self.headers and not self.skip_depth:
            start = self.headers.pop()
            if len("".join(self.parts[start:]).split()) < HEADER_MIN_WORDS:
                del self.parts[start:]
        self._break(tag)

    def _break(self, tag):
        if self.skip_depth:
            return
        if tag in PARAGRAPH_TAGS:
            self.parts.append("\n\n")
        elif tag in LINE_TAGS and not (self.parts and self.parts[-1].endswith("\n")):  # </li><li>: one break
            self.parts.append("\n")
        elif tag in CELL_TAGS:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.skip_depth:
            # Outside <pre>, a line break in the HTML source is just white space.
            self.parts.append(data if self.pre_depth else data.replace("\n", " ").replace("\r", " "))


_MANY_NEWLINES = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """The visible text of an HTML page: paragraphs separated by a blank line, white space inside lines collapsed."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def decode_html(body: bytes, content_type: str = "") -> str:
    """Bytes -> str using the charset of the Content-Type header, else of a <meta> tag, else UTF-8. Undecodable
    bytes become U+FFFD: a page with one bad byte is still a page."""
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type or "", re.IGNORECASE)
    charset = m.group(1) if m else None
    if charset is None:
        m2 = _META_CHARSET.search(body[:4096])
        charset = m2.group(1).decode("ascii", "replace") if m2 else "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------------------------
# WARC


@dataclass
class WarcRecord:
    headers: dict[str, str]  # WARC headers, names lower-cased
    block: bytes             # the record's content block (for a response: HTTP status line, headers, payload)
    number: int              # 1-based position of the record in its file

    @property
    def type(self) -> str:
        return self.headers.get("warc-type", "")

    @property
    def url(self) -> str:
        return self.headers.get("warc-target-uri", "").strip("<>")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_warc(path, issues: list | None = None, strict: bool = False) -> Iterator[WarcRecord]:
    """Records of a WARC file (plain or gzip, including one gzip member per record). A truncated or corrupt file
    yields the records before the damage and records an Issue (or raises DataError when strict)."""
    path = Path(path)
    number, line_no = 0, 0
    with _open_binary(path) as f:
        try:
            while True:
                line = f.readline()
                line_no += 1
                if not line:
                    return
                if not line.strip():
                    continue  # the blank lines between records
                if not line.startswith(b"WARC/"):
                    raise DataError(f"{path}:{line_no}: expected a WARC/1.x record header, got {line[:40]!r}")
                headers = {}
                while True:
                    h = f.readline()
                    line_no += 1
                    if not h:
                        raise EOFError("the file ends inside a record header")
                    if not h.strip():
                        break
                    name, _, value = h.decode("utf-8", "replace").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                block = f.read(length)
                if len(block) < length:
                    raise EOFError(f"record {number + 1} is cut short ({len(block)} of {length} bytes)")
                line_no += block.count(b"\n")
                number += 1
                yield WarcRecord(headers, block, number)
        except (EOFError, OSError, zlib.error, DataError, ValueError) as e:
            issue = Issue(str(path), line_no, f"truncated or corrupt WARC after record {number}: {e}")
            if strict:
                raise DataError(str(issue)) from None
            if issues is not None:
                issues.append(issue)


def _dechunk(body: bytes) -> bytes:
    """Undo HTTP/1.1 chunked transfer encoding: <hex size>\\r\\n<data>\\r\\n ... 0\\r\\n\\r\\n."""
    out, pos = [], 0
    while pos < len(body):
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(body[pos:eol].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out.append(body[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2
    return b"".join(out)


def http_response(block: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, decoded payload) of an HTTP response as stored in a WARC record."""
    head, _, body = block.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "x-gzip"):
        body = gzip.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    return status, headers, body


def warc_html_pages(path, issues: list | None = None, strict: bool = False,
                    counts: dict | None = None) -> Iterator[tuple[WarcRecord, str]]:
    """(record, HTML text) for each HTTP response of the WARC file whose payload is HTML. ``counts`` (if given)
    receives records / responses / html tallies."""
    counts = counts if counts is not None else {}
    for rec in iter_warc(path, issues, strict):
        counts["records"] = counts.get("records", 0) + 1
        if rec.type != "response" or not rec.headers.get("content-type", "").startswith("application/http"):
            continue
        counts["responses"] = counts.get("responses", 0) + 1
        try:
            status, headers, body = http_response(rec.block)
        except (OSError, zlib.error, EOFError, ValueError) as e:
            issue = Issue(str(path), 0, f"record {rec.number} ({rec.url}): undecodable HTTP payload: {e}")
            if strict:
                raise DataError(str(issue)) from None
            if issues is not None:
                issues.append(issue)
            continue
        content_type = headers.get("content-type", "")
        if status != 200 or not content_type.lower().startswith(("text/html", "application/xhtml")):
            continue
        counts["html"] = counts.get("html", 0) + 1
        yield rec, decode_html(body, content_type)


# ---------------------------------------------------------------------------------------------------------------
# Documents from files


@dataclass
class Issue:
    """A piece of bad input: where (file, line; 0 when a line makes no sense) and what."""
    path: str
    line: int
    problem: str

    def __str__(self):
        return f"{self.path}:{self.line}: {self.problem}" if self.line else f"{self.path}: {self.problem}"


@dataclass
class Doc:
    record: dict             # the output record: {"text": ..., any other fields of the input, passed through}
    origin: str              # where it came from, for the report: "file:line" or "file#record"
    html: str | None = None  # raw HTML still to be extracted into record["text"]


SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".warc", ".warc.gz", ".html", ".htm")


def input_files(paths: list[str]) -> list[Path]:
    """Files given directly, and the files with a known suffix found (recursively, sorted) in folders given."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES))
        elif p.is_file():
            if not p.name.endswith(SUFFIXES):
                raise DataError(f"{p}: unknown input type (expected one of {', '.join(SUFFIXES)})")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def _problem(issues: list, strict: bool, path, line: int, problem: str) -> None:
    issue = Issue(str(path), line, problem)
    if strict:
        raise DataError(str(issue))
    issues.append(issue)


def _decode_line(raw: bytes, issues, strict, path, line_no) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        _problem(issues, strict, path, line_no, f"invalid UTF-8 at byte {e.start} (kept, bad bytes as U+FFFD)")
        return raw.decode("utf-8", errors="replace")


def _read_jsonl(path: Path, issues, strict) -> Iterator[Doc]:
    line_no = 0
    with _open_binary(path) as f:
        try:
            for line_no, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                line = _decode_line(raw, issues, strict, path, line_no)
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    _problem(issues, strict, path, line_no, f"malformed JSON ({e.msg} at column {e.colno}); skipped")
                    continue
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    _problem(issues, strict, path, line_no, 'no "text" string in this record; skipped')
                    continue
                yield Doc(rec, f"{path}:{line_no}")
        except (EOFError, OSError, zlib.error) as e:  # gzip: truncated stream, bad CRC, not gzip at all
            _problem(issues, strict, path, line_no + 1, f"unreadable compressed data, rest of file skipped ({e})")


def _read_txt(path: Path, issues, strict, split: str) -> Iterator[Doc]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        _problem(issues, strict, path, raw.count(b"\n", 0, e.start) + 1,
                 f"invalid UTF-8 at byte {e.start} (kept, bad bytes as U+FFFD)")
        text = raw.decode("utf-8", errors="replace")
    if split == "file":
        yield Doc({"text": text}, f"{path}:1")
        return
    # split into paragraphs (blank-line separated) or lines; origin is the line where each starts
    pattern = r"\n\s*\n" if split == "paragraph" else r"\n"
    pos = 0
    for m in [*re.finditer(pattern, text), None]:
        end = m.start() if m else len(text)
        piece = text[pos:end].strip()
        if piece:
            yield Doc({"text": piece}, f"{path}:{text.count(chr(10), 0, pos) + 1}")
        pos = m.end() if m else end


def read_documents(paths: list[str], issues: list, strict: bool = False, txt_split: str = "file",
                   warc_counts: dict | None = None) -> Iterator[Doc]:
    """Every document of the given files and folders, in order. ``txt_split``: a .txt file is one document
    ("file"), or one per blank-line separated "paragraph", or one per "line"."""
    if txt_split not in ("file", "paragraph", "line"):
        raise ValueError(f"txt_split must be file, paragraph or line, not {txt_split!r}")
    for path in input_files(paths):
        name = path.name
        if name.endswith((".jsonl", ".jsonl.gz")):
            yield from _read_jsonl(path, issues, strict)
        elif name.endswith((".warc", ".warc.gz")):
            for rec, html in warc_html_pages(path, issues, strict, warc_counts):
                yield Doc({"text": "", "url": rec.url, "date": rec.headers.get("warc-date", "")},
                          f"{path}#{rec.number}", html=html)
        elif name.endswith((".html", ".htm")):
            yield Doc({"text": ""}, f"{path}:1", html=decode_html(path.read_bytes()))
        else:
            yield from _read_txt(path, issues, strict, txt_split)
