"""Cleaning steps scored against true kinds: precision and recall computed by hand on a hand-made list of
decisions, and on a small labelled corpus run through the whole cleaner."""
import json

from nanotrain.cleaning import Decontaminator, Steps, clean
from nanotrain.quality import Blocklist
from nanotrain.truth_scores import Decision, score

STEPS = ["content", "quality", "exact_dedup", "near_dedup"]


def test_precision_recall_by_hand():
    d = [Decision("clean", None),                    # 0
         Decision("spam", "quality"),                # 1  quality: true positive
         Decision("clean", "quality"),               # 2  quality: false positive
         Decision("spam", "content"),                # 3  content: false positive; quality: caught earlier
         Decision("blocklist", "content"),           # 4  content: true positive
         Decision("blocklist", None),                # 5  content: missed
         Decision("spam", None),                     # 6  quality: missed
         Decision("exact_dup", "exact_dedup", 0),    # 7  exact: true positive
         Decision("exact_dup", None),                # 8  the labelled copy came first and was kept ...
         Decision("zh", None),                       # 9
         Decision("clean", "exact_dedup", 8),        # 10 ... so the labels of 8 and 10 swap: a true positive
         Decision("near_dup", "near_dedup", 0),      # 11 near: true positive
         Decision("zh", "near_dedup", 9),            # 12 near: false positive (9 is no near_dup: no swap)
         Decision("near_dup", None)]                 # 13 near: missed
    s = score(d, STEPS)
    # step: (removed, true pos., missed, caught earlier, precision, recall), counted from the comments above
    want = {"content": (2, 1, 1, 0, 1 / 2, 1 / 2), "quality": (2, 1, 1, 1, 1 / 2, 1 / 2),
            "exact_dedup": (2, 2, 0, 0, 1.0, 1.0), "near_dedup": (2, 1, 1, 0, 1 / 2, 1 / 2)}
    for st in s.steps:
        assert (st.removed, st.true_pos, st.missed, st.caught_earlier, st.precision, st.recall) == want[st.step]
    assert s.steps[2].false_pos == 0 and s.steps[3].false_pos == 1 and s.swapped == 1
    assert s.confusion[("clean", "kept")] == 2 and s.confusion[("exact_dup", "exact_dedup")] == 2
    assert sum(s.confusion.values()) == len(d) and s.confusion[("exact_dup", "kept")] == 0
    assert score([Decision("clean", None)], ["content"]).steps[0].precision is None  # nothing removed: undefined


def test_a_chain_of_copies_swaps_step_by_step():
    # 0 is a near copy of the page that 1 (labelled exact_dup) and 2 (its clean original) are exact copies of:
    # exact dedup removes 2 as a copy of 1, near dedup then removes 1 as a near copy of 0
    d = [Decision("near_dup", None), Decision("exact_dup", "near_dedup", 0), Decision("clean", "exact_dedup", 1)]
    s = score(d, ["exact_dedup", "near_dedup"])
    assert [(x.true_pos, x.false_pos, x.missed) for x in s.steps] == [(1, 0, 0), (1, 0, 0)] and s.swapped == 2


def _page(i: int, n: int = 150) -> str:
    """A long English page of its own words (passes every Gopher rule)."""
    words = [f"{'abcdefghij'[i]}{chr(97 + k % 26)}{chr(97 + k // 26 % 26)}ing" for k in range(n)]
    return " ".join(f"the {w} of" if k % 5 == 0 else w for k, w in enumerate(words)) + "."


LEAK = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May? The answer is 72.")


def test_the_cleaner_scores_its_steps_on_a_labelled_corpus(tmp_path):
    near = _page(3).replace("the", "a", 1)  # one word changed: 5-shingle Jaccard 146/156
    records = [("clean", _page(0)), ("clean", _page(1)), ("exact_dup", _page(2)), ("clean", _page(2)),
               ("clean", _page(3)), ("near_dup", near), ("spam", "buy cheap shoes now " * 40),
               ("blocklist", _page(4) + " Play casino games."), ("short", "Page not found."),
               ("zh", "小镇的面包师每天早上五点起床，烤好面包以后送到学校。" * 6),
               ("eval_leak", _page(5) + " " + LEAK), ("clean", _page(6))]
    (tmp_path / "web.jsonl").write_text("".join(json.dumps({"text": t, "kind": k}) + "\n" for k, t in records))
    (tmp_path / "evals.jsonl").write_text(json.dumps({"question": LEAK}) + "\n")
    steps = Steps(blocklist=Blocklist(words=["casino"]),
                  decontaminator=Decontaminator.from_paths([str(tmp_path / "evals.jsonl")]))
    rep = clean([str(tmp_path / "web.jsonl")], tmp_path / "out" / "clean.jsonl", steps, progress=False)
    by_step = {s.step: s for s in rep.truth.steps}
    assert [(s.removed, s.true_pos, s.missed) for s in rep.truth.steps] == [
        (0, 0, 0), (1, 1, 0), (2, 2, 0), (1, 1, 0), (1, 1, 0), (1, 1, 0)]  # extract .. near_dedup
    # the Chinese page passes Gopher's rules: its characters are words, the English-only rules do not apply to it
    assert by_step["quality"].precision == 1.0 and rep.truth.confusion[("zh", "kept")] == 1
    assert rep.truth.swapped == 1  # the clean original came after its labelled copy
    md = rep.to_markdown()
    assert ("| quality | code, ellipsis, lorem, repeated_lines, short, spam, symbols | 2 | 2 | 0 | 0 | 0 | 1.000 "
            "| 1.000 |") in md
    assert "| decontam | eval_leak | 1 | 1 | 0 | 0 | 0 | 1.000 | 1.000 |" in md
    unlabelled = tmp_path / "plain.jsonl"
    unlabelled.write_text("".join(json.dumps({"text": t}) + "\n" for _, t in records))
    rep = clean([str(unlabelled)], tmp_path / "out2" / "clean.jsonl", steps, progress=False)
    assert rep.truth is None and "scored against the true kinds" not in rep.to_markdown()
