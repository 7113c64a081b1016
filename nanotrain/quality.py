"""Content filtering and Gopher's quality rules: per-document checks that return the reason a document is removed.

Every check is a plain function of one document that returns ``None`` (keep) or a ``Reason(rule, detail)``.

- ``content_filter``: a blocklist of words/phrases (as C4 did with its list of bad words, Raffel et al. 2020,
  sec. 2.2) and of URL domains (subdomains included), both read from files, one entry per line.
- ``gopher_quality``: the quality and repetition rules of Gopher's MassiveWeb pipeline with the paper's thresholds
  (Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher", Appendix A.1.1
  and Table A1). Each rule is switched off by setting its threshold to None, or by naming it in ``skip``.

    from nanotrain.quality import GopherRules, gopher_quality
    reason = gopher_quality(text, GopherRules())          # None, or e.g. Reason("min_words", "12 < 50")
    for rule, value, reason in gopher_measures(text, GopherRules()): ...   # every rule's value and verdict

Definitions (the paper gives the thresholds; the exact counting below is ours, and every metric is computed on
the same word list):
- words: white-space separated tokens with leading/trailing punctuation stripped; tokens that are only
  punctuation ("-", "...", "|") are symbols, not words. Chinese and Japanese are written without spaces, so there
  every Han or kana character is a word of its own ("Tina住在Junebury。" is 4 words: Tina 住 在 Junebury, the full
  stop being punctuation); otherwise a whole Chinese page would be one or two "words" and fail min_words.
- CJK text (at least half of its words are Han or kana characters): Gopher's MassiveWeb kept English pages only (a
  language filter ran first), and its thresholds were set on English words. Here Chinese pages stay, so the rules
  that assume English words are measured but always pass on CJK text: mean word length (a character-word is one
  long), stop words (English ones), and the word n-gram repetition rules (a character n-gram is a shorter, more
  often repeated unit than a word n-gram: the built-in world's clean Chinese pages fail them four times as often as
  its English ones; FineWeb-2 sets such thresholds per language, and there are no Chinese ones here to calibrate
  on). Word count (in characters), symbols, bullets, ellipses, alphabetic words and duplicate lines and paragraphs
  judge CJK text as any other.
- lines: the non-empty lines of the text; paragraphs: the non-empty blocks between blank lines.
- the stop word rule counts different words of Gopher's list, in any case ("The ... the" is one): the paper asks
  for documents that "contain at least two of the following English words".
- a duplicate line/paragraph is one that occurred earlier in the document (the first occurrence is not one).
- the top n-gram character fraction: characters of the most frequent word n-gram, times its count, over the
  characters of all words. The duplicate n-gram character fraction: characters of the words covered by a repeated
  occurrence (not the first) of some n-gram, each word counted once, over the characters of all words.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np

from nanotrain.minhash import fmix64, splitmix64


@dataclass(frozen=True)
class Reason:
    rule: str         # a short, stable name: what the report counts removals by
    detail: str = ""  # the measured value against the threshold, for the report's examples

    def __str__(self):
        return f"{self.rule} ({self.detail})" if self.detail else self.rule


# ---------------------------------------------------------------------------------------------------------------
# Content filter


def load_list(path) -> list[str]:
    """Entries of a blocklist file: one per line, lower-cased; blank lines and lines starting with # are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip().lower() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Blocklist:
    words: list[str] = field(default_factory=list)    # words or phrases; matched as whole words, any case
    domains: list[str] = field(default_factory=list)  # example.com blocks example.com and *.example.com
    min_hits: int = 1  # a document is removed when blocklisted words occur at least this many times

    def __post_init__(self):
        # One regular expression for all entries: \b...\b so that "xxx" does not match inside "xxxl" words.
        escaped = sorted((re.escape(w) for w in self.words), key=len, reverse=True)
        self._word_re = re.compile(r"\b(?:" + "|".join(escaped) + r")\b", re.IGNORECASE) if escaped else None
        self._domains = {d.lstrip(".") for d in self.domains}

    @classmethod
    def from_files(cls, words_path=None, domains_path=None, min_hits: int = 1) -> "Blocklist":
        return cls(load_list(words_path) if words_path else [], load_list(domains_path) if domains_path else [],
                   min_hits)


def url_domain(url: str) -> str:
    """Host name of a URL, lower-case, without port or 'www.' (accepts 'example.com/path' without a scheme too)."""
    host = urlsplit(url if "//" in url else "//" + url).hostname or ""
    return host.lower().removeprefix("www.")


def content_filter(text: str, url: str | None, blocklist: Blocklist) -> Reason | None:
    """Remove pages from blocklisted domains, and pages that use blocklisted words (C4 removed a page for any
    single word of its list; ``min_hits`` allows some tolerance)."""
    if url and blocklist._domains:
        host = url_domain(url)
        parts = host.split(".")
        for i in range(len(parts) - 1):  # the host itself and every parent domain: a.b.example.com, b.example.com, ..
            if ".".join(parts[i:]) in blocklist._domains:
                return Reason("blocked_domain", ".".join(parts[i:]))
    if blocklist._word_re is not None:
        hits = blocklist._word_re.findall(text)
        if len(hits) >= blocklist.min_hits:
            return Reason("blocked_words", f"{len(hits)} hit(s), e.g. {hits[0].lower()!r}")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Gopher quality rules


STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's list, A.1.1
BULLETS = ("•", "●", "◦", "▪", "‣", "-", "*")
ELLIPSES = ("...", "…")
_PUNCT = string.punctuation + "“”‘’«»—–…·•" + "。，、；：？！「」『』（）《》【】〈〉〔〕．"  # + CJK punctuation
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana and Han ideographs: scripts without spaces
_CJK_CHAR = re.compile(f"[{_CJK}]")
_CJK_STOPS = "\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"  # CJK and full-width punctuation
_CJK_SPLIT = re.compile(f"[{_CJK}]|[^{_CJK}{_CJK_STOPS}]+")  # one CJK character, or a run of anything else
_MIX = splitmix64(0x60F7, 16) | np.uint64(1)  # odd multipliers, one per position inside an n-gram
_HAS_LETTER = re.compile(r"[^\W\d_]")  # a Unicode letter: a word character that is not a digit or underscore


@dataclass
class GopherRules:
    """Thresholds of Gopher's MassiveWeb filters (Rae et al. 2021, A.1.1 and Table A1); None switches one off."""
    # quality filter: remove a document whose ...
    min_words: int | None = 50                  # ... word count is below 50
    max_words: int | None = 100_000             # ... or above 100,000
    min_mean_word_length: float | None = 3.0    # ... mean word length is below 3 characters
    max_mean_word_length: float | None = 10.0   # ... or above 10
    max_symbol_word_ratio: float | None = 0.1   # ... ratio of '#', or of ellipses, to words is above 0.1
    max_bullet_lines: float | None = 0.9        # ... more than 90% of lines start with a bullet
    max_ellipsis_lines: float | None = 0.3      # ... more than 30% of lines end with an ellipsis
    min_alpha_words: float | None = 0.8         # ... fewer than 80% of words contain an alphabetic character
    min_stop_words: int | None = 2              # ... fewer than 2 of: the, be, to, of, and, that, have, with
    #                                             (different words: "the ... the" is one)
    # repetition removal (Table A1): remove a document whose ...
    max_dup_line_fraction: float | None = 0.30        # ... duplicate lines are more than 30% of its lines
    max_dup_paragraph_fraction: float | None = 0.30   # ... duplicate paragraphs are more than 30% of paragraphs
    max_dup_line_chars: float | None = 0.20           # ... characters in duplicate lines are more than 20%
    max_dup_paragraph_chars: float | None = 0.20      # ... characters in duplicate paragraphs are more than 20%
    max_top_ngram_chars: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_dup_ngram_chars: dict = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11,
                                                               10: 0.10})
    skip: frozenset = frozenset()  # rule names to switch off (e.g. {"min_stop_words"} for non-English text)

    @classmethod
    def rule_names(cls) -> list[str]:
        """Every switchable rule name (top/duplicate n-gram rules are named top_2gram_chars, dup_5gram_chars...)."""
        names = [f.name for f in fields(cls) if f.name not in ("max_top_ngram_chars", "max_dup_ngram_chars", "skip")]
        d = cls()
        return names + [f"top_{n}gram_chars" for n in d.max_top_ngram_chars] + \
            [f"dup_{n}gram_chars" for n in d.max_dup_ngram_chars]

    def on(self, name: str, value) -> bool:
        return value is not None and name not in self.skip


def words_of(text: str) -> list[str]:
    """White-space tokens with surrounding punctuation stripped; pure-punctuation tokens dropped. Inside a token,
    every Han or kana character is a word of its own (see the module docstring)."""
    if not _CJK_CHAR.search(text):
        return [w for w in (tok.strip(_PUNCT) for tok in text.split()) if w]
    return [w for tok in text.split() for part in _CJK_SPLIT.findall(tok) if (w := part.strip(_PUNCT))]


def english_only(rule: str) -> bool:
    """The rules CJK text always passes (see the module docstring)."""
    return rule in ("min_mean_word_length", "max_mean_word_length", "min_stop_words") or rule.endswith("gram_chars")


def is_cjk(words: list[str]) -> bool:
    """At least half of the words are single Han or kana characters: Chinese or Japanese text."""
    return 2 * sum(len(w) == 1 and bool(_CJK_CHAR.match(w)) for w in words) >= len(words) > 0


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items that occurred before, their total characters)."""
    seen, dup, dup_chars = set(), 0, 0
    for x in items:
        if x in seen:
            dup, dup_chars = dup + 1, dup_chars + len(x)
        else:
            seen.add(x)
    return dup, dup_chars


class WordNgrams:
    """The word n-grams of one document as 64-bit codes (equal n-grams get equal codes), so that the n-gram rules
    count repeats with numpy instead of Python tuples: several times faster on long pages."""

    def __init__(self, words: list[str]):
        # Only equality *inside this document* matters here, so Python's per-process salted hash() is fine (the
        # rules' outcome does not depend on the hash values; a 64-bit collision is as good as impossible).
        self.words = fmix64(np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64))
        self.lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        self.total_chars = int(self.lengths.sum())
        self._sums = [self.words * _MIX[0]]  # _sums[n-1][i] = sum_t<n words[i+t] * m_t, built up one n at a time

    def occurrences(self, n: int):
        """(codes of the n-grams at each position, index of each distinct n-gram's first position, its count)."""
        while len(self._sums) < n:
            t = len(self._sums)  # extend the (t)-gram sums to (t+1)-grams
            span = len(self.words) - t
            self._sums.append(self._sums[-1][:span] + self.words[t:t + span] * _MIX[t])
        codes = fmix64(self._sums[n - 1])
        _, first, count = np.unique(codes, return_index=True, return_counts=True)
        return codes, first, count


def top_ngram_char_fraction(ng: WordNgrams, n: int) -> float:
    """Characters of the most frequent n-gram (its words' characters times its count) over all word characters."""
    if len(ng.lengths) < n or ng.total_chars == 0:
        return 0.0
    _, first, count = ng.occurrences(n)
    best = int(count.max())
    if best < 2:
        return 0.0
    i = int(first[count == best].min())  # of equally frequent n-grams, the one that occurs first
    return int(ng.lengths[i:i + n].sum()) * best / ng.total_chars


def dup_ngram_char_fraction(ng: WordNgrams, n: int) -> float:
    """Characters of words inside a repeated occurrence (not the first) of any n-gram, each word counted once, over
    all word characters."""
    w = len(ng.lengths)
    if w < n or ng.total_chars == 0:
        return 0.0
    codes, first, _ = ng.occurrences(n)
    repeated = np.ones(len(codes), dtype=bool)
    repeated[first] = False
    starts = np.flatnonzero(repeated)
    # a word is covered when some repeated occurrence spans it: +1 where one starts, -1 where it ends, running sum
    depth = np.cumsum(np.bincount(starts, minlength=w + 1) - np.bincount(starts + n, minlength=w + 1))[:w]
    return int(ng.lengths[depth > 0].sum()) / ng.total_chars


def gopher_measures(text: str, rules: GopherRules) -> Iterator[tuple[str, float, Reason | None]]:
    """Each switched-on Gopher rule in the paper's order (quality filter, then repetition removal): (rule, the
    document's value, the Reason if it fails the rule, else None; CJK text passes the English-only rules). Lazy, so
    that ``gopher_quality`` stops at the first failure and a short page never has its n-grams counted;
    bench/bench_gopher_datatrove.py reads them all."""
    words = words_of(text)
    cjk = is_cjk(words)
    for rule, value, reason in _measures(text, words, rules):
        yield rule, value, None if cjk and english_only(rule) else reason


def _measures(text: str, words: list[str], rules: GopherRules) -> Iterator[tuple[str, float, Reason | None]]:
    r = rules
    n = len(words)
    if r.on("min_words", r.min_words):
        yield "min_words", n, Reason("min_words", f"{n} < {r.min_words}") if n < r.min_words else None
    if r.on("max_words", r.max_words):
        yield "max_words", n, Reason("max_words", f"{n} > {r.max_words}") if n > r.max_words else None
    mean_len = sum(map(len, words)) / n if n else 0.0
    if r.on("min_mean_word_length", r.min_mean_word_length):
        yield "min_mean_word_length", mean_len, Reason("min_mean_word_length", f"{mean_len:.2f} < "
                                                       f"{r.min_mean_word_length}") \
            if mean_len < r.min_mean_word_length else None
    if r.on("max_mean_word_length", r.max_mean_word_length):
        yield "max_mean_word_length", mean_len, Reason("max_mean_word_length", f"{mean_len:.2f} > "
                                                       f"{r.max_mean_word_length}") \
            if mean_len > r.max_mean_word_length else None
    if r.on("max_symbol_word_ratio", r.max_symbol_word_ratio):  # "for either the hash symbol or the ellipsis"
        ratios = [(count / n if n else float(count > 0), name) for name, count in
                  (("'#'", text.count("#")), ("ellipsis", sum(text.count(e) for e in ELLIPSES)))]
        ratio, name = max(ratios)
        yield "max_symbol_word_ratio", ratio, Reason("max_symbol_word_ratio", f"{name} {ratio:.3f} > "
                                                     f"{r.max_symbol_word_ratio}") \
            if ratio > r.max_symbol_word_ratio else None
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    bullet = sum(line.startswith(BULLETS) for line in lines) / len(lines) if lines else 0.0
    if r.on("max_bullet_lines", r.max_bullet_lines):
        yield "max_bullet_lines", bullet, Reason("max_bullet_lines", f"{bullet:.3f} > {r.max_bullet_lines}") \
            if bullet > r.max_bullet_lines else None
    ellipsis = sum(line.endswith(ELLIPSES) for line in lines) / len(lines) if lines else 0.0
    if r.on("max_ellipsis_lines", r.max_ellipsis_lines):
        yield "max_ellipsis_lines", ellipsis, Reason("max_ellipsis_lines", f"{ellipsis:.3f} > "
                                                     f"{r.max_ellipsis_lines}") \
            if ellipsis > r.max_ellipsis_lines else None
    alpha = sum(map(bool, map(_HAS_LETTER.search, words))) / n if n else 0.0
    if r.on("min_alpha_words", r.min_alpha_words):
        yield "min_alpha_words", alpha, Reason("min_alpha_words", f"{alpha:.3f} < {r.min_alpha_words}") \
            if alpha < r.min_alpha_words else None
    # "contain at least two of the following English words": two different words of the list, in any case
    stops = len(STOP_WORDS.intersection(map(str.lower, words)))
    if r.on("min_stop_words", r.min_stop_words):
        yield "min_stop_words", stops, Reason("min_stop_words", f"{stops} < {r.min_stop_words}") \
            if stops < r.min_stop_words else None

    # Repetition removal. Lines and paragraphs first (cheap), then n-grams.
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    for name, items, max_frac, max_chars in (
            ("line", lines, r.max_dup_line_fraction, r.max_dup_line_chars),
            ("paragraph", paragraphs, r.max_dup_paragraph_fraction, r.max_dup_paragraph_chars)):
        dup, dup_chars = _duplicates(items)
        frac = dup / len(items) if items else 0.0
        chars = dup_chars / sum(map(len, items)) if items else 0.0
        if r.on(f"max_dup_{name}_fraction", max_frac):
            yield f"max_dup_{name}_fraction", frac, Reason(f"max_dup_{name}_fraction", f"{frac:.3f} > {max_frac}") \
                if frac > max_frac else None
        if r.on(f"max_dup_{name}_chars", max_chars):
            yield f"max_dup_{name}_chars", chars, Reason(f"max_dup_{name}_chars", f"{chars:.3f} > {max_chars}") \
                if chars > max_chars else None
    ng = WordNgrams(words)
    for k, limit in sorted(r.max_top_ngram_chars.items()):
        name = f"top_{k}gram_chars"
        if r.on(name, limit):
            frac = top_ngram_char_fraction(ng, k)
            yield name, frac, Reason(name, f"{frac:.3f} > {limit}") if frac > limit else None
    for k, limit in sorted(r.max_dup_ngram_chars.items()):
        name = f"dup_{k}gram_chars"
        if r.on(name, limit):
            frac = dup_ngram_char_fraction(ng, k)
            yield name, frac, Reason(name, f"{frac:.3f} > {limit}") if frac > limit else None


def gopher_quality(text: str, rules: GopherRules) -> Reason | None:
    """The first Gopher rule the document fails (in the paper's order: quality filter, then repetition), or None."""
    return next((reason for _, _, reason in gopher_measures(text, rules) if reason is not None), None)
