"""The labelling stage: answers ranked by simulated labellers become preference pairs (with their gold scores) and
thumbs up / down (nanotrain/tinyworld/labellers.label_answers, on hand-written answers whose gold scores are known),
and data/label.py runs it end to end on a model's own samples."""
import json
import random
import re

import pytest

from conftest import script
from nanotrain.errors import ConfigError
from nanotrain.pref_data import load_feedback, load_pairs
from nanotrain.tinyworld.gold import Gold
from nanotrain.tinyworld.labellers import label_answers


def test_rankings_become_pairs_and_thumbs_with_gold_scores(tiny_chat):
    _, world = tiny_chat
    gold = Gold.load(world)
    records = [json.loads(ln) for ln in (world / "eval_prompts.jsonl").read_text().splitlines()][:30]
    records = [r for r in records if gold.spec(r["prompt"]).must]  # fact questions: the oracle scores 1
    answers = []
    for r in records:  # the oracle (1.0), the oracle hedged (0.6), the oracle twice (repetitive), a refusal (0.05)
        oracle = r["answer"]
        answers += [oracle, oracle[:-1] + ", I think.", "I'm sorry, but I can't help with that.", oracle]
    files, scored = label_answers(records, answers, 4, gold, tau=0.02, bar=0.8, val_fraction=0.2,
                                  rng=random.Random(0))
    pairs = files["prefs_helpful_train"] + files["prefs_helpful_val"]
    # per prompt: oracle > hedged > refusal (3 pairs; the two identical oracles tie); labels at noise 0.02 follow gold
    assert len(pairs) == 3 * len(records)
    assert all(p["gold_chosen"] > p["gold_rejected"] for p in pairs)
    assert {(p["gold_chosen"], p["gold_rejected"]) for p in pairs} == {(1.0, 0.6), (1.0, 0.05), (0.6, 0.05)}
    assert len(files["prefs_helpful_val"]) == 3 * round(0.2 * len(records))
    thumbs = {(f["gold"], f["label"]) for f in files["feedback_train"]}
    assert thumbs == {(1.0, True), (0.6, False), (0.05, False)}
    assert len(scored["helpful"]) == len(records) and all(len(s) == 4 for s in scored["helpful"])


def test_a_held_out_prompt_is_never_trained_on_however_often_it_repeats(tiny_chat):
    """The world's label prompts repeat: every record of a held-out prompt goes to validation, none to training."""
    _, world = tiny_chat
    gold = Gold.load(world)
    records = [json.loads(ln) for ln in (world / "eval_prompts.jsonl").read_text().splitlines()]
    records = [r for r in records if gold.spec(r["prompt"]).must][:10] * 3  # fact questions, each three times
    answers = [a for r in records for a in (r["answer"], r["answer"][:-1] + ", I think.",
                                            "I'm sorry, but I can't help with that.", r["answer"])]
    files, _ = label_answers(records, answers, 4, gold, tau=0.02, bar=0.8, val_fraction=0.3, rng=random.Random(0))
    val = {p["prompt"] for p in files["prefs_helpful_val"]}
    train = {p["prompt"] for p in files["prefs_helpful_train"] + files["prefs_safe_train"]}
    k = round(0.3 * len({r["prompt"] for r in records}))
    assert len(val) == k and not val & train
    assert not val & {f["prompt"] for f in files["feedback_train"]}
    assert len(files["prefs_helpful_val"]) == 3 * 3 * k  # three pairs from each of a held-out prompt's three copies


def test_label_script_writes_every_file_and_its_report(tiny_chat, tmp_path):
    root, world = tiny_chat
    out = tmp_path / "labels"
    report = script("data/label.py")["main"](["--init", str(root / "sft.pt"), "--world", str(world), "--prompts",
                                               str(world / "label_prompts.jsonl"), "--out", str(out), "--samples", "3",
                                               "--max-new-tokens", "8", "--dtype", "float32"])
    n = len((world / "label_prompts.jsonl").read_text().splitlines())
    assert report["prompts"] == n and report["samples"] == 3
    for name in ("prefs_helpful_train", "prefs_helpful_val", "prefs_safe_train", "prefs_safe_val"):
        assert len(load_pairs(out / f"{name}.jsonl")) == report[f"{name}_records"]
    assert len(load_feedback(out / "feedback_train.jsonl")) == report["feedback_train_records"] == 3 * round(0.9 * n)
    for k in ("hedged", "generic_refusals", "hallucinated", "thumbs_up"):
        assert 0 <= report[k] <= 1, k
    assert (out / "report.json").read_text() == json.dumps(report, indent=1) + "\n"


@pytest.mark.parametrize("flag, value, message", [
    ("--samples", "1", "--samples must be at least 2, not 1: pairs are two answers to one prompt"),
    ("--val-fraction", "1", "--val-fraction must be at least 0 and below 1, not 1.0"),
    ("--noise", "-0.1", "--noise must be 0 (labellers who agree with gold) or more, not -0.1"),
    ("--temperature", "-1", "--temperature must be 0 (greedy) or more")])
def test_flags_that_leave_nothing_to_rank_are_refused_before_sampling(tiny_chat, tmp_path, flag, value, message):
    """They were taken as given: --samples 1 leaves no two answers to rank, --val-fraction 1 no prompt to train on,
    known only after the sampling time was spent; each is now one sentence up front."""
    root, world = tiny_chat
    with pytest.raises(ConfigError, match=re.escape(message)):
        script("data/label.py")["main"](["--init", str(root / "sft.pt"), "--world", str(world), "--prompts",
                                         str(world / "label_prompts.jsonl"), "--out", str(tmp_path / "labels"),
                                         "--max-new-tokens", "8", "--dtype", "float32", flag, value])
    assert not (tmp_path / "labels").exists()
