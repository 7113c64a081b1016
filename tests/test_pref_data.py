"""Preference and feedback loaders: every format to the same Pair, HH-RLHF dialogues converted exactly (and counted on
the real files), OASST ranks to pairs, a clear file:line error on a malformed record, and a split by prompt."""
import gzip
import json

import pytest

from nanotrain.errors import DataError
from nanotrain.pref_data import Feedback, Pair, hh_pair, load_feedback, load_pairs, pairs_as_feedback, split_pairs


def write(path, records, raw_lines=()):
    lines = [json.dumps(r) for r in records] + list(raw_lines)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_plain_pairs_with_string_or_messages_prompt(tmp_path):
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    path = write(tmp_path / "p.jsonl", [
        {"prompt": "What colour is Lena's bicycle?", "chosen": "Red.", "rejected": "Blue.", "kind": "wrong"},
        {"prompt": convo, "chosen": "Hello!", "rejected": "Go away."},
        {"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."},  # no preference: skipped
    ])
    assert load_pairs(path) == [
        Pair([{"role": "user", "content": "What colour is Lena's bicycle?"}], "Red.", "Blue."),
        Pair(convo, "Hello!", "Go away.")]


def test_trl_conversational_preferences_explicit_and_implicit_prompt(tmp_path):
    """TRL's dataset formats (huggingface.co/docs/trl/dataset_formats): chosen/rejected as message lists, after a
    prompt list, or as whole conversations whose shared part is the prompt."""
    user = [{"role": "user", "content": "What color is the sky?"}]
    blue, green = [{"role": "assistant", "content": "It is blue."}], [{"role": "assistant", "content": "It is green."}]
    system = [{"role": "system", "content": "Be brief."}]
    path = write(tmp_path / "trl.jsonl", [
        {"prompt": user, "chosen": blue, "rejected": green},  # conversational preference
        {"chosen": user + blue, "rejected": user + green},  # conversational, implicit prompt
        {"prompt": "What color is the sky?", "chosen": user + blue, "rejected": user + green},  # prompt repeated
        {"prompt": system + user + blue + user, "chosen": blue, "rejected": green},  # multi-turn, system message
        {"prompt": user, "chosen": blue, "rejected": blue},  # no preference: skipped
    ])
    assert load_pairs(path) == [Pair(user, "It is blue.", "It is green.")] * 3 + [
        Pair(system + user + blue + user, "It is blue.", "It is green.")]
    for bad, message in (({"prompt": user, "chosen": blue + user, "rejected": green}, "must end with the assistant"),
                         ({"chosen": user + blue + user + blue, "rejected": user + green}, "differ from message 1"),
                         ({"chosen": blue, "rejected": green}, "must end with the assistant's reply to a user"),
                         ({"prompt": user, "chosen": [{"role": "bot", "content": "x"}], "rejected": green},
                          "chosen message 0 must be"),
                         ({"prompt": user, "chosen": 3, "rejected": green}, "'chosen' must be a string or a list")):
        with pytest.raises(DataError, match=rf"bad\.jsonl:2: .*{message}"):
            load_pairs(write(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}, bad]))


def test_hh_dialogue_becomes_prompt_conversation_and_two_replies():
    shared = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Name a fruit."
    rec = {"chosen": shared + "\n\nAssistant: An apple.", "rejected": shared + "\n\nAssistant: A carrot."}
    assert hh_pair(rec, "f:1") == Pair(
        [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
         {"role": "user", "content": "Name a fruit."}], "An apple.", "A carrot.")
    # "Assistant:" inside a reply is part of the reply, not a new turn; the replies may share a beginning
    rec = {"chosen": "\n\nHuman: Go\n\nAssistant: Sure. More?\n\nAssistant: yes",
           "rejected": "\n\nHuman: Go\n\nAssistant: Sure. No."}
    assert hh_pair(rec, "f:1") == Pair([{"role": "user", "content": "Go"}], "Sure. More?\n\nAssistant: yes",
                                       "Sure. No.")
    # two Human turns in a row are joined into one user message
    rec = {"chosen": "\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "rejected": "\n\nHuman: a\n\nHuman: b\n\nAssistant: d"}
    assert hh_pair(rec, "f:1").messages == [{"role": "user", "content": "a\n\nb"}]


def test_hh_rlhf_files_convert_with_exact_counts(shared_data, capsys):
    for name, records, identical, empty in (("harmless-base", 2312, 0, 4), ("helpful-base", 2354, 2, 0),
                                            ("helpful-rejection-sampled", 2749, 32, 0)):
        path = shared_data / "hh_rlhf" / f"{name}_test.jsonl.gz"
        raw = [json.loads(ln) for ln in gzip.open(path, "rt", encoding="utf-8")]
        assert len(raw) == records  # the official test-split sizes (shared/data/README.md)
        # skipped: identical dialogues, and those whose preferred one ends at the assistant's marker (an empty reply)
        kept = [r for r in raw if r["chosen"] != r["rejected"] and not r["chosen"].rstrip().endswith("Assistant:")]
        assert len(kept) == records - identical - empty
        pairs = load_pairs(path)
        assert len(pairs) == len(kept)
        said = capsys.readouterr().out
        assert (f"{identical} pairs whose two replies are the same" in said) == (identical > 0), said
        assert (f"{empty} pairs whose preferred reply is empty" in said) == (empty > 0), said
        for p, r in zip(pairs, kept):  # each reply is the tail of its dialogue; the prompt ends with the human
            assert r["chosen"].rstrip().endswith(p.chosen) and r["rejected"].rstrip().endswith(p.rejected)
            assert p.messages[-1]["role"] == "user" and p.messages[0]["role"] == "user"
            assert p.messages[0]["content"] in r["chosen"]
    assert len(load_pairs(shared_data / "hh_rlhf")) == 2308 + 2352 + 2717  # a folder loads every file in it


def test_malformed_records_name_file_and_line(tmp_path):
    good = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
    path = write(tmp_path / "hh.jsonl.gz", [good, good], ['{"chosen": "no dialogue here", "rejected": "x"}'])
    with pytest.raises(DataError, match=r"hh\.jsonl\.gz:3: not an HH-RLHF dialogue"):
        load_pairs(path)
    path = write(tmp_path / "bad.jsonl", [good], ['{"chosen": "\\n\\nHuman: a', ""])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        load_pairs(path)
    path = write(tmp_path / "keys.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p"}])
    with pytest.raises(DataError, match=r"keys\.jsonl:2: not a preference record"):
        load_pairs(path)
    path = write(tmp_path / "msgs.jsonl", [{"prompt": [{"role": "robot", "content": "x"}], "chosen": "c",
                                            "rejected": "r"}])
    with pytest.raises(DataError, match=r"msgs\.jsonl:1: prompt message 0"):
        load_pairs(path)
    # the labelling stage's noise-free scores: a string was a ValueError traceback from float(), one alone a KeyError
    for gold in ({"gold_chosen": "high", "gold_rejected": 0.1}, {"gold_chosen": 0.9}):
        path = write(tmp_path / "gold.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r", "gold_chosen": 1,
                                                "gold_rejected": 0}, {"prompt": "p", "chosen": "c", "rejected": "r",
                                                                      **gold}])
        with pytest.raises(DataError, match=r"gold\.jsonl:2: gold_chosen and gold_rejected must both be numbers"):
            load_pairs(path)
    assert load_pairs(write(tmp_path / "one.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r",
                                                      "gold_chosen": 1, "gold_rejected": 0.5}]))[0].gold == (1.0, 0.5)


def oasst_msg(text, role, rank=None, replies=(), **kw):
    return dict(text=text, role=role, rank=rank, replies=list(replies), deleted=False, synthetic=False, **kw)


def test_oasst_ranks_become_all_better_worse_pairs(tmp_path, shared_data):
    tree = {"message_tree_id": "t1", "prompt": oasst_msg("Q?", "prompter", replies=[
        oasst_msg("third", "assistant", 2),
        oasst_msg("best", "assistant", 0, replies=[oasst_msg("Why?", "prompter", replies=[
            oasst_msg("because", "assistant", 0), oasst_msg("dunno", "assistant", 1)])]),
        oasst_msg("second", "assistant", 1),
        oasst_msg("spam", "assistant", 3) | {"deleted": True},  # deleted: ignored
        oasst_msg("bot", "assistant", 4) | {"synthetic": True},  # machine-written: ignored
    ])}
    pairs = load_pairs(write(tmp_path / "o.jsonl", [tree]))
    q = [{"role": "user", "content": "Q?"}]
    assert pairs == [Pair(q, "best", "second"), Pair(q, "best", "third"), Pair(q, "second", "third"),
                     Pair(q + [{"role": "assistant", "content": "best"}, {"role": "user", "content": "Why?"}],
                          "because", "dunno")]
    real = load_pairs(shared_data / "oasst_trees" / "en_100_tree.jsonl")
    assert len(real) > 500 and all(p.messages[-1]["role"] == "user" for p in real)


def test_feedback_labels_and_errors(tmp_path):
    path = write(tmp_path / "fb.jsonl", [{"prompt": "p", "completion": "good", "label": True},
                                         {"prompt": [{"role": "user", "content": "q"}], "completion": "bad",
                                          "label": False}])
    fb = load_feedback(path)
    assert [(f.messages[0]["content"], f.completion, f.label) for f in fb] == [("p", "good", True), ("q", "bad", False)]
    convo = [{"role": "user", "content": "q"}]  # TRL's conversational unpaired preference
    path = write(tmp_path / "trl.jsonl", [{"prompt": convo, "completion": [{"role": "assistant", "content": "a"}],
                                           "label": False}])
    assert [(f.messages, f.completion, f.label) for f in load_feedback(path)] == [(convo, "a", False)]
    path = write(tmp_path / "fb2.jsonl", [{"prompt": "p", "completion": "c", "label": True},
                                          {"prompt": "p", "completion": "c", "label": "yes"}])
    with pytest.raises(DataError, match=r"fb2\.jsonl:2: label must be true or false"):
        load_feedback(path)
    path = write(tmp_path / "fb3.jsonl", [{"prompt": "p", "label": True}])
    with pytest.raises(DataError, match=r"fb3\.jsonl:1: record lacks field\(s\) \['completion'\]"):
        load_feedback(path)


def test_pairs_become_one_thumbs_up_and_one_thumbs_down_each():
    lena, hi = [{"role": "user", "content": "What colour is Lena's bicycle?"}], [{"role": "user", "content": "Hi"}]
    assert pairs_as_feedback([Pair(lena, "Red.", "Blue."), Pair(hi, "Hello!", "Go away.")]) == [
        Feedback(lena, "Red.", True), Feedback(lena, "Blue.", False),
        Feedback(hi, "Hello!", True), Feedback(hi, "Go away.", False)]


def test_split_holds_out_whole_prompts():
    pairs = [Pair([{"role": "user", "content": f"q{i % 50}"}], f"a{i}", f"b{i}") for i in range(200)]
    train, val = split_pairs(pairs, 0.1, seed=0)
    assert len(train) + len(val) == 200 and len(val) == 20  # 5 of 50 prompts, 4 pairs each
    assert not {p.messages[0]["content"] for p in train} & {p.messages[0]["content"] for p in val}
    assert split_pairs(pairs, 0.1, seed=0) == (train, val)  # deterministic
