"""ROUGE-L (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries", §3.1): how much of one text's word
order another preserves, through their longest common subsequence (LCS).

For a candidate c and a reference r of |c| and |r| tokens:

    P = LCS(c, r) / |c|,   R = LCS(c, r) / |r|,   F = (1 + b^2) P R / (R + b^2 P)     (Lin 2004, eqs. 2-4; b = 1)

Self-Instruct (Wang et al. 2022, §2.3) keeps a generated instruction only if its ROUGE-L F with every instruction
already in the pool is below 0.7. Tokens follow the ``rouge_score`` package that paper used: lower-cased, every
run of characters other than a-z and 0-9 is a separator (so non-Latin text has no tokens and scores 0).

    rouge_l("the cat sat on the mat", "the cat lay on the mat")    # -> 0.8333 (LCS 5 of 6 and 6 tokens)
"""
from __future__ import annotations

import re


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence, by the textbook dynamic programme over prefixes:
    L[i][j] = L[i-1][j-1] + 1 if a[i] == b[j] else max(L[i-1][j], L[i][j-1]); two rows suffice."""
    if len(a) < len(b):
        a, b = b, a  # the row runs over the shorter sequence
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_tokens(c: list, r: list, beta: float = 1.0) -> tuple[float, float, float]:
    """(precision, recall, F) of ROUGE-L for two token lists; all 0 when either is empty or nothing is shared."""
    lcs = lcs_length(c, r) if c and r else 0
    if lcs == 0:
        return 0.0, 0.0, 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return p, rec, (1 + beta ** 2) * p * rec / (rec + beta ** 2 * p)


def rouge_l_scores(candidate: str, reference: str, beta: float = 1.0) -> tuple[float, float, float]:
    """(precision, recall, F) of ROUGE-L for two texts."""
    return rouge_l_tokens(tokenize(candidate), tokenize(reference), beta)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure (symmetric for beta = 1)."""
    return rouge_l_scores(candidate, reference)[2]
