"""Text extraction and input reading for the cleaning pipeline: HTML -> text, a WARC reader, and document readers
for .txt, JSONL(.gz), WARC(.gz) and .html files, which report bad input instead of stopping on it.

- ``html_to_text``: the standard library's HTMLParser; block elements become line or paragraph breaks. The text of
  invisible elements (script, style, head, ...) is always dropped; with ``remove_boilerplate`` (the default) so is
  the page chrome: nav, footer, aside, form, a header unless it is long, and containers whose class, id or ARIA
  role names chrome (cookie banners, share bars, related links, breadcrumbs, comments: Mozilla Readability's
  "unlikely candidates" test). ``remove_boilerplate=False`` keeps every visible text, as a naive extractor would.
- ``iter_warc``: WARC/1.0 and 1.1 records from a (multi-member gzip) WARC file. A corrupt record (wrong
  Content-Length, block cut short, garbled header, damaged gzip member) is reported and skipped, and reading
  resynchronises on the next "WARC/1." header, so it costs that record only. ``warc_html_pages`` keeps the HTTP
  responses whose payload is HTML, with the HTTP chunked transfer and gzip/deflate content encodings undone.
- ``read_documents``: every document of a list of files or folders, each with its origin ("file:line", or
  "file#record" for WARC). Invalid UTF-8, a truncated gzip, a malformed JSON line or a record without a "text"
  string is recorded as an ``Issue`` (file, line, what) and reading goes on, unless ``strict``. A WARC record's
  ``WARC-Tinyworld-<Name>`` headers (the true kind of a generated page, outside its text) become record fields.

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

# Elements whose content is never shown as text: code, styling, embedded media.
INVISIBLE_TAGS = {"script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object", "canvas"}
# Page chrome: navigation, footers, side boxes, forms and their controls.
CHROME_TAGS = {"nav", "footer", "aside", "form", "button", "select", "textarea"}
# A <header> is page chrome (logo, menu, search) too, but some site builders put a whole article in one, so a
# header's text is kept when it is long enough to be content.
HEADER_MIN_WORDS = 50
# Chrome in plain containers (<div class="cookie-banner">): Mozilla Readability's test for elements unlikely to be
# content (Readability.js, REGEXPS.unlikelyCandidates / okMaybeItsACandidate, and its unlikely ARIA roles) plus
# "cookie" and "share", matched against the words of the class and id ("cookie-banner": cookie, banner) rather than
# as substrings, which would take "uui-heroheader08_component" (commoncrawl.org's whole page) for a header.
UNLIKELY = {"ad", "ai2html", "banner", "breadcrumb", "breadcrumbs", "combx", "comment", "comments", "community",
            "cookie", "cookies", "disqus", "extra", "footer", "gdpr", "header", "legends", "menu", "related", "remark",
            "replies", "rss", "share", "sharing", "shoutbox", "sidebar", "skyscraper", "social", "sponsor",
            "supplemental", "agegate", "pagination", "pager", "popup"}
MAYBE_CONTENT = {"and", "article", "body", "column", "content", "main", "mathjax", "shadow"}
UNLIKELY_ROLES = {"menu", "menubar", "complementary", "navigation", "alert", "alertdialog", "dialog"}
_NAME_WORDS = re.compile(r"[a-z]+")
# Only elements whose end tag HTML requires, so that the skipped part always ends.
CONTAINER_TAGS = {"div", "section", "ul", "ol", "dl", "table", "span", "details", "dialog", "figure"}
# Elements that start a new paragraph (blank line) or a new line.
PARAGRAPH_TAGS = {"p", "div", "section", "article", "main", "header", "nav", "footer", "aside", "form", "h1", "h2",
                  "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "blockquote", "pre", "figure", "figcaption", "hr",
                  "address", "details", "summary", "fieldset", "center", "body"}
LINE_TAGS = {"br", "li", "tr", "dt", "dd", "caption", "option"}
CELL_TAGS = {"td", "th"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _is_chrome(attrs) -> bool:
    """Readability's test: class and id name something unlikely to be content, and nothing likely; or an ARIA role
    of page chrome."""
    a = dict(attrs)
    words = set(_NAME_WORDS.findall(f"{a.get('class') or ''} {a.get('id') or ''}".lower()))
    return bool(words & UNLIKELY and not words & MAYBE_CONTENT) or (a.get("role") or "") in UNLIKELY_ROLES


class _TextExtractor(HTMLParser):
    def __init__(self, remove_boilerplate: bool = True, chrome_names: bool = True):
        super().__init__(convert_charrefs=True)  # &amp; &#8217; ... arrive already decoded in handle_data
        self.remove_boilerplate = remove_boilerplate
        self.chrome_names = remove_boilerplate and chrome_names
        self.chrome_seen = False  # a container was skipped for its class/id/role
        self.skip_tags = INVISIBLE_TAGS | CHROME_TAGS if remove_boilerplate else INVISIBLE_TAGS
        self.parts: list[str] = []
        self.skip_depth = 0  # > 0 while inside a skipped element
        self.pre_depth = 0   # > 0 inside <pre>: its line breaks are content
        self.headers: list[int] = []  # where in self.parts each open <header> began
        self.chrome_tag, self.chrome_depth = None, 0  # the container skipped for its class/role, and its nesting

    def handle_starttag(self, tag, attrs):
        if tag == self.chrome_tag:
            self.chrome_depth += 1
        if tag in self.skip_tags and tag not in VOID_TAGS:
            self.skip_depth += 1
        elif self.chrome_names and not self.skip_depth and tag in CONTAINER_TAGS and attrs and _is_chrome(attrs):
            self.chrome_tag, self.chrome_depth, self.chrome_seen = tag, 1, True
            self.skip_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        elif tag == "header" and self.remove_boilerplate and not self.skip_depth:
            self.headers.append(len(self.parts))
        self._break(tag)

    def handle_startendtag(self, tag, attrs):  # <br/>: a break, and never opens a skipped element
        self._break(tag)

    def handle_endtag(self, tag):
        if tag == self.chrome_tag:
            self.chrome_depth -= 1
            if self.chrome_depth == 0:
                self.chrome_tag = None
                self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in self.skip_tags:
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


def html_to_text(html: str, remove_boilerplate: bool = True, chrome_names: bool = True) -> str:
    """The visible text of an HTML page without its chrome (or with it: ``remove_boilerplate=False``): paragraphs
    separated by a blank line, white space inside lines collapsed. ``chrome_names=False`` keeps the containers
    named like chrome (the retry when skipping them leaves no text)."""
    parser = _TextExtractor(remove_boilerplate, chrome_names)
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    text = _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()
    if not text and parser.chrome_seen:  # all of it in containers named like chrome: keep them (Readability, too,
        return html_to_text(html, remove_boilerplate, chrome_names=False)  # retries when it finds too little)
    return text


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
    number: int              # 1-based position in its file; a skipped corrupt record keeps its number
    line: int = 0            # line of its "WARC/1." header in the decompressed file (zcat FILE | sed -n LINEp)
    offset: int = 0          # byte offset of that header in the decompressed file

    @property
    def type(self) -> str:
        return self.headers.get("warc-type", "")

    @property
    def url(self) -> str:
        return self.headers.get("warc-target-uri", "").strip("<>")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


WARC_MAGIC = b"WARC/1."       # the first bytes of every WARC/1.0 and 1.1 record
GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1, ID2 and CM = deflate: the first bytes of every gzip member (RFC 1952, 2.3.1)
_READ_SIZE = 1 << 18


def _gzip_members(f, gaps: list) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file of one or many members. A member that fails to decompress (a damaged
    byte, a bad CRC) is skipped up to the next gzip header after its start, and the loss is noted in ``gaps`` as
    (offset in the decompressed stream, what happened); so one damaged record of a WARC written one gzip member per
    record (as the WARC standard recommends and Common Crawl does) costs that record only. The compressed bytes of
    the current member are held for that search: one record, or the whole file for a single-member gzip."""
    buf = bytearray()  # compressed bytes of the current member (while searching: bytes not yet searched)
    at, fed, out_bytes = 0, 0, 0  # file offset of buf[0]; bytes of buf given to the decompressor; bytes yielded
    d = zlib.decompressobj(wbits=31)  # 16 + 15: a gzip header and trailer around a deflate stream; None: searching
    while True:
        if fed == len(buf):
            chunk = f.read(_READ_SIZE)
            if not chunk:
                break
            buf += chunk
        if d is None:  # after a damaged member: look for the next gzip header
            i = buf.find(GZIP_MAGIC)
            if i < 0:
                keep = min(len(buf), len(GZIP_MAGIC) - 1)  # a header may straddle two reads
                at, fed = at + len(buf) - keep, keep
                del buf[:len(buf) - keep]
                continue
            at, fed, d = at + i, 0, zlib.decompressobj(wbits=31)
            del buf[:i]
        try:
            out = d.decompress(bytes(buf[fed:]))
            fed = len(buf)
        except zlib.error as e:
            gaps.append((out_bytes, f"the gzip member at compressed byte {at} is corrupt ({e})"))
            at, fed, d = at + 1, 0, None
            del buf[:1]
            continue
        if out:
            out_bytes += len(out)
            yield out
        if d.eof:  # the member is complete; what follows it starts the next one (trailing NUL padding is allowed)
            rest = d.unused_data
            at, fed, d = at + len(buf) - len(rest), 0, zlib.decompressobj(wbits=31)
            buf = bytearray(rest if rest.strip(b"\0") else b"")
    if d is not None and fed:
        gaps.append((out_bytes, f"the file ends inside the gzip member at compressed byte {at}"))


class _Lookahead:
    """A byte stream with lookahead: the WARC reader checks what follows a record before it trusts the record's
    Content-Length, and after a corrupt record it searches ahead for the next one. Positions are relative to the
    read position; ``offset`` and ``line`` say where that is in the stream."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buf, self.pos = chunks, bytearray(), 0  # self.buf[self.pos:] is not read yet
        self.offset, self.line = 0, 1

    def available(self, n: int) -> bool:
        """Buffer at least n unread bytes; False when the stream ends first."""
        while len(self.buf) - self.pos < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                return False
            del self.buf[:self.pos]
            self.pos = 0
            self.buf += chunk
        return True

    def peek(self, start: int, end: int) -> bytes:
        self.available(end)
        return bytes(self.buf[self.pos + start:self.pos + end])

    def find(self, pattern: bytes, start: int = 0) -> int:
        """Position of the first occurrence of pattern at or after start, or -1 if the stream has none."""
        while True:
            i = self.buf.find(pattern, self.pos + start)
            if i >= 0:
                return i - self.pos
            start = max(start, len(self.buf) - self.pos - len(pattern) + 1)
            if not self.available(len(self.buf) - self.pos + 1):
                return -1

    def skip(self, n: int) -> None:
        self.available(n)
        n = min(n, len(self.buf) - self.pos)
        self.line += self.buf.count(b"\n", self.pos, self.pos + n)
        self.pos, self.offset = self.pos + n, self.offset + n

    def skip_to(self, pattern: bytes, start: int = 0) -> bool:
        """Move to the next occurrence of pattern at or after start (True), or to the end of the stream (False),
        holding no more than one read of the stream at a time."""
        while True:
            i = self.buf.find(pattern, self.pos + start)
            if i >= 0:
                self.skip(i - self.pos)
                return True
            self.skip(max(start, len(self.buf) - self.pos - len(pattern) + 1))  # what cannot begin a match
            start = 0
            if not self.available(len(self.buf) - self.pos + 1):
                self.skip(len(self.buf) - self.pos)
                return False

    def skip_space(self) -> None:
        while self.available(1) and self.buf[self.pos] in b" \t\r\n":
            self.skip(1)


def _parse_record(s: _Lookahead) -> tuple[dict, bytes, int] | tuple[None, str, int]:
    """The record at the read position: (headers, block, its length in bytes) if it is sound, else (None, what is
    wrong, where the search for the next record starts). Sound means: a WARC/1.x line, "Name: value" header lines
    up to a blank line, a numeric Content-Length, and after that many bytes the record's closing CRLF CRLF (or
    other white space, then the next WARC/1.x line or the end of the file). Checking what follows is what catches a
    wrong Content-Length or a block cut short, which would otherwise swallow, or be swallowed by, the next record."""
    if s.peek(0, len(WARC_MAGIC)) != WARC_MAGIC:
        return None, f"expected a WARC/1.x record header, found {s.peek(0, 40)!r}", 1
    headers, pos = {}, s.find(b"\n") + 1  # after the version line (0: there is no line end)
    while True:
        eol = s.find(b"\n", pos) if pos else -1
        if eol < 0:
            return None, "the file ends inside the record's header", max(pos, 1)
        line, pos = s.peek(pos, eol + 1), eol + 1
        if not line.strip():
            break
        if line[:1] in (b" ", b"\t") and headers:  # a continuation of the previous field's value
            headers[name] += " " + line.decode("utf-8", "replace").strip()
            continue
        name, colon, value = line.decode("utf-8", "replace").partition(":")
        name = name.strip().lower()
        if not colon:
            return None, f"a header line without a colon: {line[:40]!r}", pos
        headers[name] = value.strip()
    length = headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()):
        return None, f"Content-Length {length!r} is not a number", pos
    end = pos + int(length)
    if not s.available(end):
        return None, f"the file ends inside the record's block (Content-Length {length})", pos
    if s.peek(end, end + 4) == b"\r\n\r\n":  # the standard's end of a record: trust the length
        return headers, s.peek(pos, end), end + 4
    after = end  # else tolerate other white space, if the next record or the end of the file follows
    while s.available(after + 1) and s.peek(after, after + 1) in (b"\r", b"\n", b" ", b"\t"):
        after += 1
    following = s.peek(after, after + len(WARC_MAGIC))
    if following and following != WARC_MAGIC:
        return None, (f"Content-Length {length} does not end the record: it is followed by "
                      f"{s.peek(after, after + 24)!r}, not the next WARC/1.x record"), pos
    return headers, s.peek(pos, end), after


def iter_warc(path, issues: list | None = None, strict: bool = False, counts: dict | None = None
              ) -> Iterator[WarcRecord]:
    """Records of a WARC file (plain or gzip, including one gzip member per record). A corrupt record (a wrong
    Content-Length, a block cut short, a garbled header, a damaged gzip member) is skipped: the reader moves on to
    the next "WARC/1." and records an Issue naming the record, its line in the decompressed
    file and its byte offset (or raises DataError when strict). ``counts["corrupt records skipped"]`` counts them."""
    path = Path(path)
    issues = issues if issues is not None else []
    counts = counts if counts is not None else {}
    gaps: list[tuple[int, str]] = []  # bytes lost to damaged gzip members: (decompressed offset, what happened)

    def skipped(number: int, line: int, problem: str) -> None:
        issue = Issue(str(path), line, f"corrupt WARC record {number}: {problem}")
        if strict:
            raise DataError(str(issue))
        issues.append(issue)
        counts["corrupt records skipped"] = counts.get("corrupt records skipped", 0) + 1

    with open(path, "rb") as f:
        try:
            s = _Lookahead(_gzip_members(f, gaps) if path.suffix == ".gz" else iter(lambda: f.read(_READ_SIZE), b""))
            number = 0
            while True:
                s.skip_space()
                if gaps and gaps[0][0] <= s.offset:  # a whole record lost in a damaged gzip member
                    number += 1
                    skipped(number, s.line, gaps.pop(0)[1])
                    continue
                if not s.available(1):
                    return
                number += 1
                line, offset = s.line, s.offset
                headers, block, where = _parse_record(s)
                if headers is not None:
                    s.skip(where)
                    yield WarcRecord(headers, block, number, line, offset)
                    continue
                # block says what is wrong; resynchronise on the next "WARC/1." (a block cut short runs straight
                # into the next record, so it need not start a line)
                found = s.skip_to(WARC_MAGIC, where)
                lost = [g[1] for g in gaps if g[0] <= s.offset]  # damaged gzip members inside what was skipped
                gaps[:] = [g for g in gaps if g[0] > s.offset]
                skipped(number, line, f"at byte {offset}: {block}; " + "".join(f"{g}; " for g in lost)
                        + f"skipped {s.offset - offset} bytes to "
                        + ("the next WARC/1. header" if found else "the end of the file"))
        except OSError as e:  # an unreadable file
            if strict:
                raise DataError(f"{path}: {e}") from None
            issues.append(Issue(str(path), 0, f"unreadable: {e}"))


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
    receives records / responses / html tallies (and "corrupt records skipped")."""
    counts = counts if counts is not None else {}
    for rec in iter_warc(path, issues, strict, counts):
        counts["records"] = counts.get("records", 0) + 1
        if rec.type != "response" or not rec.headers.get("content-type", "").startswith("application/http"):
            continue
        counts["responses"] = counts.get("responses", 0) + 1
        try:
            status, headers, body = http_response(rec.block)
        except (OSError, zlib.error, EOFError, ValueError) as e:
            issue = Issue(str(path), rec.line, f"record {rec.number} ({rec.url}): undecodable HTTP payload: {e}")
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
# WARC headers "WARC-Tinyworld-<Name>: value" become the record's field <name>: a generated crawl's truth about each
# page (its kind, for nanotrain/truth_scores.py), carried outside the text; the cleaning steps never read them.
LABEL_HEADER = "warc-tinyworld-"


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
                labels = {k[len(LABEL_HEADER):]: v for k, v in rec.headers.items() if k.startswith(LABEL_HEADER)}
                yield Doc({"text": "", "url": rec.url, "date": rec.headers.get("warc-date", ""), **labels},
                          f"{path}#{rec.number}", html=html)
        elif name.endswith((".html", ".htm")):
            yield Doc({"text": ""}, f"{path}:1", html=decode_html(path.read_bytes()))
        else:
            yield from _read_txt(path, issues, strict, txt_split)
