"""The simulated labellers (nanotrain/tinyworld/labellers.py) have the noise they are documented to have: two answers
come out in the gold order with probability sigma(gap / tau) whatever else is ranked with them, a thumbs up comes with
probability sigma((g - bar) / tau), and two labellers agree with probability p^2 + (1 - p)^2. Checked by counting
against those closed forms (four standard deviations of a binomial count)."""
import math
import random

import pytest

from nanotrain.tinyworld import labellers


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def within(hits, n, p):
    return abs(hits / n - p) <= 4 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("gap", [0.05, 0.1, 0.4])
def test_pairs_follow_the_gold_order_with_the_bradley_terry_probability(gap):
    rng, n, tau = random.Random(0), 20000, 0.1
    scores = [0.5, 0.5 + gap, 0.0, 1.0]  # two more answers in the ranking change nothing (Plackett-Luce)
    hits = 0
    for _ in range(n):
        order = labellers.rank(scores, tau, rng)
        hits += order.index(1) < order.index(0)
    assert within(hits, n, sigmoid(gap / tau))


def test_ranked_pairs_leave_out_ties_and_keep_the_ranking():
    assert labellers.ranked_pairs([0, 3, 1, 2], [1.0, 0.6, 0.0, 0.6]) == [(0, 3), (0, 1), (0, 2), (3, 2), (1, 2)]
    assert labellers.ranked_pairs([1, 0], [0.5, 0.5]) == []


def test_thumbs_up_rate_and_two_labellers_agreement():
    rng, n, tau = random.Random(1), 20000, 0.08
    for g in (1.0, 0.8, 0.6):
        assert within(sum(labellers.thumbs_up(g, tau, rng) for _ in range(n)), n, sigmoid((g - labellers.BAR) / tau))
    gap = 0.1
    p = sigmoid(gap / tau)
    stats = labellers.agreement([[0.5 + gap, 0.5]] * n, tau, seed=2)
    assert stats["pairs_all"] == n and stats["pairs_close"] == n
    assert within(round(stats["labeller_agreement_close"] * n), n, p * p + (1 - p) ** 2)
    assert within(round(stats["labeller_gold_all"] * n), n, p)
    far = labellers.agreement([[1.0, 0.0]] * 100, tau)
    assert far["pairs_close"] == 0 and far["labeller_gold_all"] == 1.0


def test_labellers_without_noise_are_the_gold_scorer():
    """data/label.py --noise 0: the noise-free labels a reward model's ceiling is measured with (RESULTS.md); tau 0
    divided by zero."""
    rng = random.Random(0)
    assert labellers.rank([0.2, 0.9, 0.5, 0.9], 0, rng) == [1, 3, 2, 0]
    assert [labellers.thumbs_up(g, 0, rng) for g in (labellers.BAR + 0.01, labellers.BAR - 0.01)] == [True, False]
    stats = labellers.agreement([[0.5, 0.45, 0.1]] * 10, 0)
    assert stats["labeller_agreement_close"] == stats["labeller_gold_all"] == 1.0
