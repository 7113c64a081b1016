"""Gopher's quality and repetition rules, ours (nanotrain/quality.py) beside datatrove's GopherQualityFilter and
GopherRepetitionFilter, rule by rule, on the Common Crawl pages of ../shared/data/web_cc_dolma.

Each rule runs alone on both sides (every other rule switched off), so a disagreement belongs to that one rule; the
threshold is the paper's on both sides (Rae et al. 2021, A.1.1 and Table A1). The comparison runs twice: with
datatrove as it is (its English words come from spaCy's tokenizer: punctuation marks are tokens of their own,
"don't" is "do" + "n't"), and with datatrove fed our word list (a datatrove WordTokenizer returning
nanotrain.quality.words_of). What agrees in the second run and not in the first is down to tokenisation; what still
disagrees comes from the rules' definitions (denominators, line and paragraph splitting, stop words counted by
case, n-gram counting), and every such document is printed with both values: ours from
nanotrain.quality.gopher_measures, datatrove's found by bisecting its own threshold (the value at which its
keep/drop decision flips), so no datatrove code is re-implemented here. RESULTS.md (data) explains the causes.

Empty pages are left out and counted: with the word-count rules off, datatrove's quality filter divides by zero on
them, and its repetition filter drops them as "empty" (ours: only min_words removes them).

    pip install datatrove spacy          # bench-only; without them the bench says so and exits
    python bench/bench_gopher_datatrove.py
    python bench/bench_gopher_datatrove.py --examples 0   # the agreement table only
"""
from __future__ import annotations

import json
from importlib.metadata import version
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nanotrain.cli import flag, parse_config
from nanotrain.quality import GopherRules, gopher_measures, gopher_quality, words_of

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class BenchConfig:
    data: str = flag(str(SHARED / "web_cc_dolma" / "cc_licensed_pages.jsonl"), "JSONL pages with a text field")
    examples: int = flag(2, "disagreements printed per rule and direction (with datatrove fed our words)")
    width: int = flag(160, "characters of each example's text shown")


# Our rule -> (datatrove filter, its argument, the paper's threshold in datatrove's form). "min" rules drop a
# document whose value is below the threshold, "max" rules one whose value is above it.
RULES = {
    "min_words": ("quality", "min_doc_words", 50, "min"),
    "max_words": ("quality", "max_doc_words", 100_000, "max"),
    "min_mean_word_length": ("quality", "min_avg_word_length", 3, "min"),
    "max_mean_word_length": ("quality", "max_avg_word_length", 10, "max"),
    "max_symbol_word_ratio": ("quality", "max_symbol_word_ratio", 0.1, "max"),
    "max_bullet_lines": ("quality", "max_bullet_lines_ratio", 0.9, "max"),
    "max_ellipsis_lines": ("quality", "max_ellipsis_lines_ratio", 0.3, "max"),
    "min_alpha_words": ("quality", "max_non_alpha_words_ratio", 0.8, "min"),  # datatrove's name, a minimum
    "min_stop_words": ("quality", "min_stop_words", 2, "min"),
    "max_dup_line_fraction": ("repetition", "dup_line_frac", 0.3, "max"),
    "max_dup_paragraph_fraction": ("repetition", "dup_para_frac", 0.3, "max"),
    "max_dup_line_chars": ("repetition", "dup_line_char_frac", 0.2, "max"),
    "max_dup_paragraph_chars": ("repetition", "dup_para_char_frac", 0.2, "max"),
    **{f"top_{n}gram_chars": ("repetition", f"top_{n}", t, "max") for n, t in ((2, .20), (3, .18), (4, .16))},
    **{f"dup_{n}gram_chars": ("repetition", f"dup_{n}", t, "max")
       for n, t in ((5, .15), (6, .14), (7, .13), (8, .12), (9, .11), (10, .10))},
}
QUALITY_OFF = dict(min_doc_words=None, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
                   max_symbol_word_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
                   max_non_alpha_words_ratio=None, min_stop_words=None)
REPETITION_OFF = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None,
                      top_n_grams=(), dup_n_grams=())


def datatrove_filter(rule: str, threshold: float, language):
    """datatrove's filter with only this rule on, at the given threshold."""
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    kind, arg, _, _ = RULES[rule]
    if kind == "quality":
        return GopherQualityFilter(**{**QUALITY_OFF, arg: threshold}, language=language)
    if arg.startswith(("top_", "dup_")) and arg[4:].isdigit():  # one n-gram rule: ((n, threshold),)
        arg, threshold = ("top_n_grams" if arg.startswith("top_") else "dup_n_grams"), ((int(arg[4:]), threshold),)
    return GopherRepetitionFilter(**{**REPETITION_OFF, arg: threshold}, language=language)


def datatrove_keeps(rule: str, text: str, language, threshold: float | None = None) -> bool:
    from datatrove.data import Document
    f = datatrove_filter(rule, RULES[rule][2] if threshold is None else threshold, language)
    return f.filter(Document(text=text, id="x")) is True


def datatrove_value(rule: str, text: str, language) -> float:
    """datatrove's value of the rule's metric on this text, found by bisecting its threshold: a "max" rule keeps
    the text exactly when threshold >= value, a "min" rule exactly when threshold <= value."""
    kind = RULES[rule][3]
    lo, hi = 1e-9, 1.0
    while datatrove_keeps(rule, text, language, hi) != (kind == "max"):  # find an upper bound
        lo, hi = hi, hi * 4
        if hi > 1e9:
            return float("inf")
    for _ in range(40):
        mid = (lo + hi) / 2
        if datatrove_keeps(rule, text, language, mid) == (kind == "max"):
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2 if kind == "max" else lo


def our_words_tokenizer():
    """A datatrove WordTokenizer whose words are ours (nanotrain.quality.words_of)."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    class OurWords(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return words_of(text)

        def sent_tokenize(self, text: str) -> list[str]:
            raise NotImplementedError("only words are needed by the Gopher filters")

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            raise NotImplementedError("only words are needed by the Gopher filters")

    return OurWords("en")


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n")[0])
    try:
        import datatrove  # noqa: F401
        import spacy  # noqa: F401  (datatrove's English word tokenizer)
    except ImportError as e:
        print(f"datatrove comparison skipped: {e.name} is not installed (bench-only: pip install datatrove spacy)")
        return
    from datatrove.utils.typeshelper import Languages
    pages = [json.loads(line) for line in open(cfg.data, encoding="utf-8")]
    docs = [(p.get("id", str(i)), p["text"]) for i, p in enumerate(pages) if p["text"].strip()]
    print(f"{cfg.data}: {len(pages)} pages, {len(pages) - len(docs)} empty ones left out, {len(docs)} compared; "
          f"datatrove {version('datatrove')}, spaCy {spacy.__version__}")
    t0 = time.time()
    ours = {}  # (doc, rule) -> (value, kept)
    for i, (_, text) in enumerate(docs):
        for rule, value, reason in gopher_measures(text, GopherRules()):
            ours[(i, rule)] = (value, reason is None)
    t_ours = time.time() - t0
    languages = {"datatrove": Languages.english, "datatrove on our words": our_words_tokenizer()}
    theirs = {name: {} for name in languages}
    t0 = time.time()
    for name, language in languages.items():
        filters = {rule: datatrove_filter(rule, RULES[rule][2], language) for rule in RULES}
        from datatrove.data import Document
        for i, (doc_id, text) in enumerate(docs):
            doc = Document(text=text, id=doc_id)
            for rule, f in filters.items():
                theirs[name][(i, rule)] = f.filter(doc) is True
    t_theirs = time.time() - t0
    print(f"ours: {t_ours:.1f}s for all rules; datatrove: {t_theirs:.1f}s for both runs (one filter per rule)\n")

    print(f"{'rule':28s} {'both keep':>9s} {'both drop':>9s} {'ours only':>9s} {'dt only':>8s} {'agree':>7s} | "
          f"{'ours only':>9s} {'dt only':>8s} {'agree':>7s}  (right: datatrove on our words)")
    total = Counter()
    for rule in RULES:
        row = []
        for name in languages:
            c = Counter((ours[(i, rule)][1], theirs[name][(i, rule)]) for i in range(len(docs)))
            agree = (c[(True, True)] + c[(False, False)]) / len(docs)
            total[name] += c[(True, True)] + c[(False, False)]
            row.append((c, agree))
        (c, a), (c2, a2) = row
        print(f"{rule:28s} {c[(True, True)]:9d} {c[(False, False)]:9d} {c[(False, True)]:9d} {c[(True, False)]:8d} "
              f"{a:7.1%} | {c2[(False, True)]:9d} {c2[(True, False)]:8d} {a2:7.1%}")
    n = len(docs) * len(RULES)
    print(f"{'all rules':28s} {'':39s} {total['datatrove'] / n:7.1%} | {'':18s} "
          f"{total['datatrove on our words'] / n:7.1%}")

    # The filters as a pipeline runs them: all rules together, on every page (empty ones too).
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    for name, language in languages.items():
        quality, repetition = GopherQualityFilter(language=language), GopherRepetitionFilter(language=language)
        c = Counter()
        for i, p in enumerate(pages):
            doc = Document(text=p["text"], id=str(i))
            c[(gopher_quality(p["text"], GopherRules()) is None,
               quality.filter(doc) is True and repetition.filter(doc) is True)] += 1
        print(f"whole filter ({name}), all {len(pages)} pages: both keep {c[(True, True)]}, both drop "
              f"{c[(False, False)]}, only ours drops {c[(False, True)]}, only datatrove drops {c[(True, False)]}: "
              f"{(c[(True, True)] + c[(False, False)]) / len(pages):.1%} agree")

    if cfg.examples <= 0:
        return
    print("\nDisagreements left with datatrove on our words (ours: nanotrain.quality.gopher_measures; datatrove: its "
          "threshold bisected):")
    words = languages["datatrove on our words"]
    for rule, (_, _, threshold, kind) in RULES.items():
        for ours_keeps in (False, True):
            hits = [i for i in range(len(docs)) if ours[(i, rule)][1] == ours_keeps
                    and theirs["datatrove on our words"][(i, rule)] != ours_keeps]
            if not hits:
                continue
            print(f"\n[{rule}] {'datatrove' if ours_keeps else 'ours'} drops, {'ours' if ours_keeps else 'datatrove'} "
                  f"keeps: {len(hits)} page(s); threshold {threshold} ({kind})")
            for i in hits[:cfg.examples]:
                doc_id, text = docs[i]
                print(f"  {doc_id}: ours {ours[(i, rule)][0]:.4g}, datatrove {datatrove_value(rule, text, words):.4g}"
                      f" | {' '.join(text.split())[:cfg.width]!r}")


if __name__ == "__main__":
    main()
