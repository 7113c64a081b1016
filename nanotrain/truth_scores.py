"""Each cleaning step scored against the truth: precision and recall per step, on documents whose true kind is known.

A labelled corpus (the built-in world's web pages, whose records carry a ``"kind"`` outside the text) says what
every document is: a clean page, or the junk some step exists for. Each step's *positives* are the kinds it exists
for (``KIND_STEP``); every other kind (``clean``, ``zh``: the world's Chinese pages, which must stay, or anything
unknown) should pass every step. Then, per step, in pipeline order:

    precision = removed positives / documents the step removed
    recall    = removed positives / positives that reached the step (not removed by an earlier step)

and ``caught_earlier`` counts the step's positives that an earlier step already removed (a spam page with a
blocklisted word goes at the content filter, before the quality rules see it). ``confusion`` is the whole
picture: documents per (true kind, step that removed it or "kept").

Duplicates need one more rule. Of two copies of a page, dedup keeps the first and removes the second; a generator
that labels one copy "exact_dup" and shuffles the pages may put that copy first. Which copy is "the duplicate" is
then a matter of order, not of content, so when a dedup step removes a document that is not its positive as a copy
of a kept one that is, the two labels are swapped before scoring (each kept document lends its label once).

    from nanotrain.truth_scores import Decision, score
    s = score([Decision("clean", None), Decision("spam", "quality"), Decision("clean", "quality")], ["quality"])
    s.steps[0].precision, s.steps[0].recall     # 0.5, 1.0

``nanotrain.cleaning.clean`` records a ``Decision`` per document of a labelled input and puts these tables in its
report (data/clean.py's report.md).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# The kinds each step exists for. Kinds not listed (clean, zh, ...) should be kept by every step.
KIND_STEP = {
    "blocklist": "content",          # pages with blocklisted words or from blocklisted domains (C4's bad-words list)
    "spam": "quality",               # keyword lists: repeated n-grams, few stop words (Gopher A.1.1)
    "symbols": "quality",            # symbol soup: few alphabetic words
    "lorem": "quality",              # placeholder text: a repeated sentence, no English stop words
    "code": "quality",               # scripts scraped as text: symbols, short tokens, repeated lines
    "short": "quality",              # fragments under 50 words ("Page not found.")
    "repeated_lines": "quality",     # one line many times
    "ellipsis": "quality",           # truncated listings: lines ending in "..."
    "eval_leak": "decontam",         # pages quoting evaluation questions with their answers
    "exact_dup": "exact_dedup",      # mirrors and reprints: the same text again
    "near_dup": "near_dedup",        # re-crawls and templated pages: nearly the same text
}
DEDUP_STEPS = ("exact_dedup", "near_dedup")


@dataclass(slots=True)
class Decision:
    kind: str | None               # the document's true kind (None: not labelled)
    step: str | None               # the step that removed it; None: kept
    duplicate_of: int | None = None  # a dedup removal: index of the kept document it is a copy of


@dataclass
class StepScore:
    step: str
    positives: list[str]  # the kinds this step exists for
    removed: int          # documents this step removed
    true_pos: int         # ... of which were its positives
    missed: int           # positives that reached this step and passed it
    caught_earlier: int   # positives removed by an earlier step

    @property
    def false_pos(self) -> int:
        return self.removed - self.true_pos

    @property
    def precision(self) -> float | None:
        return self.true_pos / self.removed if self.removed else None

    @property
    def recall(self) -> float | None:
        reached = self.true_pos + self.missed
        return self.true_pos / reached if reached else None


@dataclass
class TruthScores:
    steps: list[StepScore]
    confusion: Counter = field(default_factory=Counter)  # (true kind, removing step or "kept") -> documents
    swapped: int = 0  # duplicate labels swapped (see the module docstring)

    def to_markdown(self) -> str:
        fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
        md = ["## Steps scored against the true kinds", "",
              "Positives of a step are the kinds it exists for; recall is over the positives that reached the step "
              "(see nanotrain/truth_scores.py)." + (f" {self.swapped} duplicate label(s) swapped to the later copy."
                                                    if self.swapped else ""), "",
              "| step | exists for | removed | true pos. | false pos. | missed | caught earlier | precision | recall |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for s in self.steps:
            md.append(f"| {s.step} | {', '.join(s.positives) or '–'} | {s.removed} | {s.true_pos} | {s.false_pos} | "
                      f"{s.missed} | {s.caught_earlier} | {fmt(s.precision)} | {fmt(s.recall)} |")
        columns = [s.step for s in self.steps] + ["kept"]
        kinds = sorted({k for k, _ in self.confusion}, key=lambda k: (k in KIND_STEP, str(k)))
        md += ["", "Documents per true kind and the step that removed them:", "",
               "| kind | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        md += [f"| {k} | " + " | ".join(str(self.confusion[(k, c)] or "") for c in columns) + " |" for k in kinds]
        return "\n".join(md) + "\n"


def score(decisions: list[Decision], steps: list[str], kind_step: dict | None = None) -> TruthScores:
    """Precision and recall of each of ``steps`` (the steps that ran, in pipeline order) against the true kinds."""
    kind_step = KIND_STEP if kind_step is None else kind_step
    kinds = [d.kind for d in decisions]  # the labels scored: the true kinds, duplicate labels swapped
    lent = set()  # (step, kept document) pairs whose label went to a removed copy
    for step in DEDUP_STEPS:  # in pipeline order: a page's exact copy may in turn be a near copy of another page
        for i, d in enumerate(decisions):
            r = d.duplicate_of
            if d.step == step and r is not None and (step, r) not in lent and kind_step.get(kinds[i]) != step \
                    and kind_step.get(kinds[r]) == step:
                kinds[i], kinds[r] = kinds[r], kinds[i]
                lent.add((step, r))
    confusion = Counter((k, d.step or "kept") for k, d in zip(kinds, decisions))
    order = {s: n for n, s in enumerate(steps)}
    out = []
    for step in steps:
        positives = sorted(k for k, s in kind_step.items() if s == step)
        removed = sum(n for (k, s), n in confusion.items() if s == step)
        true_pos = sum(confusion[(k, step)] for k in positives)
        earlier = sum(n for (k, s), n in confusion.items() if k in positives and s in order and order[s] < order[step])
        reached = sum(n for (k, s), n in confusion.items() if k in positives) - earlier
        out.append(StepScore(step, positives, removed, true_pos, reached - true_pos, earlier))
    return TruthScores(out, confusion, len(lent))


class DecisionLog:
    """A cleaning run's decisions, one per document in input order, from the first document that carries the
    truth field on (an unlabelled input costs nothing)."""

    def __init__(self, truth_field: str = "kind"):
        self.field, self.first, self.decisions = truth_field, None, []

    def read(self, index: int, record: dict, step: str | None) -> None:
        """Document ``index`` (0-based, input order) was read and removed at ``step`` (None: passed on)."""
        if self.first is None and self.field in record:
            self.first = index
        if self.first is not None:
            self.decisions.append(Decision(record.get(self.field), step))

    def duplicate(self, index: int, step: str, kept: int) -> None:
        """Document ``index`` was removed by a dedup step as a copy of document ``kept``."""
        if self.first is not None and index >= self.first:
            d = self.decisions[index - self.first]
            d.step, d.duplicate_of = step, kept - self.first if kept >= self.first else None

    def scores(self, steps: list[str]) -> TruthScores | None:
        return score(self.decisions, steps) if self.first is not None else None
