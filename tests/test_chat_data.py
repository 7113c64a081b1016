"""SFT data: every loader on its real file in ../shared/data (counts and hand-checked records), one clear file:line
error per kind of malformed record, packing and padding that keep each example's loss mask, batches that are a pure
function of the step and split across DDP ranks, a token-weighted validation loss, and ROUGE-L / Self-Instruct's
novelty filter against hand-computed values."""
import json

import pytest
import torch

from conftest import script
from nanotrain.chat_data import (SFTBatches, encode_conversations, load_conversations, mean_loss, pack,
                                 read_prompts, to_inputs_targets)
from nanotrain.errors import DataError
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.rouge import lcs_length, rouge_l, rouge_l_scores
from nanotrain.tokenizer import Tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(["What colour is Lena's bicycle? Lena's bicycle is red. Tom is a baker in Oakville."] * 3,
                           vocab_size=300)


def write(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


# ----- real files -------------------------------------------------------------------------------------------------

def test_lima_json_array_with_multi_turn_history(shared_data):
    convs = load_conversations(shared_data / "lima" / "lima.json")
    assert len(convs) == 1029  # the LIMA training set
    multi = [c for c in convs if len(c) > 2]
    assert len(multi) == 29  # "29 have multi-turn history" (data README)
    raw = json.loads((shared_data / "lima" / "lima.json").read_text())
    i = next(k for k, r in enumerate(raw) if r["history"])
    c, r = convs[i], raw[i]
    assert c[0] == {"role": "user", "content": r["history"][0][0]}
    assert c[1] == {"role": "assistant", "content": r["history"][0][1]}
    assert c[-2]["content"] == r["instruction"].strip() and c[-1]["content"] == r["output"].strip()


def test_dolly_alpaca_and_oasst(shared_data):
    dolly = load_conversations(shared_data / "dolly_sample" / "dolly_151.jsonl")
    assert len(dolly) == 151 and all(len(c) == 2 for c in dolly)
    first = json.loads((shared_data / "dolly_sample" / "dolly_151.jsonl").read_text().splitlines()[0])
    assert dolly[0][0]["content"] == first["instruction"] and dolly[0][1]["content"] == first["response"]
    with_ctx = next(c for c in dolly if "\n\n" in c[0]["content"])  # the context follows the instruction
    assert len(with_ctx[0]["content"].split("\n\n")[0]) > 0

    alpaca = load_conversations(shared_data / "alpaca_sample" / "alpaca_data_1k.json")
    assert len(alpaca) == 1000

    oasst = load_conversations(shared_data / "oasst_trees" / "en_100_tree.jsonl")
    assert len(oasst) == 95  # 100 trees, 5 of them rooted in a synthetic (model-written) prompt
    # Tree 1 is synthetic (skipped). Tree 2, read by hand: prompt -> rank-0 reply -> its follow-up -> rank-0 reply.
    c = oasst[0]
    assert [m["role"] for m in c] == ["user", "assistant", "user", "assistant"]
    assert c[0]["content"].startswith("How to protect my eyes")
    assert c[1]["content"].startswith("Your eyes are not designed")
    assert c[2]["content"].startswith("Are blue light blocking glasses")
    assert c[3]["content"].startswith("There is no scientific research")
    # Tree 4: the best reply's follow-up question was never answered, so the path ends at the best reply.
    assert [m["role"] for m in oasst[2]] == ["user", "assistant"]
    assert oasst[2][1]["content"].startswith("When purchasing a new TV")


# ----- malformed records --------------------------------------------------------------------------------------------

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize("bad, message", [
    ('{"messages": [', "malformed JSON"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "role 'robot'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}, "'assistant' was expected"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}, "empty"),
    ({"messages": [{"role": "user", "content": "x"}]}, "must end with an assistant reply"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "'user' was expected"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, "'role' and 'content'"),
    ({"messages": "hello"}, "non-empty list"),
    ({"text": "no format"}, "lacks field 'messages'"),  # the format is the first record's
])
def test_malformed_record_names_file_and_line(tmp_path, bad, message):
    path = write(tmp_path / "d.jsonl", [GOOD, "", GOOD, bad])  # the bad record is on line 4 (line 2 is blank)
    with pytest.raises(DataError, match=rf"d\.jsonl:4: .*{message}"):
        load_conversations(path)


def test_sharegpt_and_trl_prompt_completion(tmp_path):
    system, q, a = ({"role": r, "content": c}
                    for r, c in (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello")))
    share = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
             {"from": "gpt", "value": "Hello"}]
    path = write(tmp_path / "share.jsonl", [{"id": "x", "conversations": share + share[1:] + share[1:2]}])
    assert load_conversations(path) == [[system, q, a, q, a]]  # the unanswered last question is dropped
    path = write(tmp_path / "bad.jsonl", [{"conversations": share},
                                          {"conversations": [{"from": "bing", "value": "x"}]}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: conversations\[0\] must be"):
        load_conversations(path)
    path = write(tmp_path / "pc.jsonl", [{"prompt": "Hi", "completion": "Hello"},
                                         {"prompt": [system, q], "completion": [a]}])
    assert load_conversations(path) == [[q, a], [system, q, a]]
    path = write(tmp_path / "kto.jsonl", [{"prompt": "Hi", "completion": "Hello", "label": False}])
    with pytest.raises(DataError, match="cannot tell the data format"):  # feedback, not demonstrations
        load_conversations(path)


def test_unknown_format_is_named(tmp_path):
    with pytest.raises(DataError, match=r"d\.jsonl:1: cannot tell the data format .*--format"):
        load_conversations(write(tmp_path / "d.jsonl", [{"text": "no format"}]))


def test_malformed_element_of_a_json_array_names_its_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c",\n  "output": ""}\n]\n')
    with pytest.raises(DataError, match=r"a\.json:3: .*empty"):  # the element starts on line 3
        load_conversations(path)
    path.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": "c", "output": }]')
    with pytest.raises(DataError, match=r"a\.json:2: malformed JSON"):
        load_conversations(path)


def test_explicit_format_overrides_detection(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"instruction": "Add 2 and 3.", "input": "", "output": "5",
                                         "response": "x"}])
    assert load_conversations(path)[0][1]["content"] == "5"  # detected as alpaca (it has "output")
    assert load_conversations(path, "dolly")[0][1]["content"] == "x"
    with pytest.raises(DataError, match="unknown data format"):
        load_conversations(path, "parquet")


# ----- batching -----------------------------------------------------------------------------------------------------

def conversations(n):
    return [[{"role": "user", "content": f"What colour is Lena's bicycle? {i}"},
             {"role": "assistant", "content": "Lena's bicycle is red." * (1 + i % 3)}] for i in range(n)]


def test_ppo_prompts_read_from_comma_separated_files_and_malformed_ones_are_named(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"prompt": "Who is Lena?", "harmful": false}\n')
    b.write_text(json.dumps({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""},
                                        {"role": "user", "content": "Steal it."}], "harmful": True}) + "\n")
    # the joined files train_rlhf.py --data's help promises; an empty turn inside a dialogue, as HH-RLHF's have, stays
    prompts, harmful = read_prompts(f"{a},{b}")
    assert prompts[0] == "Who is Lena?" and prompts[1][-1] == {"role": "user", "content": "Steal it."}
    assert harmful == [False, True]
    assert read_prompts(a)[1] == [False] and read_prompts(_write(tmp_path, '{"prompt": "x"}'))[1] is None
    # a conversation already answered is left out and counted, not fatal to the file; 1 and 0 are labels too
    done = '{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}'
    assert read_prompts(_write(tmp_path, done + '\n{"prompt": "x", "harmful": 1}')) == (["x"], [True])
    assert "skipped 1 prompt conversations that end with the assistant's turn" in capsys.readouterr().out
    # each was accepted as it stood and failed, or misled PPO, only later
    for line, message in (('{"prompt": 42}', "'prompt' must be a non-empty string or a list of messages, not 42"),
                          ('{"prompt": "  "}', "'prompt' must be a non-empty string"),
                          ('{"prompt": "Who?", "harmful": "no"}', "'harmful' must be true or false, not 'no'"),
                          ('{"prompt": [{"role": "robot", "content": "Hi"}]}', "prompt message 0 must be")):
        with pytest.raises(DataError, match=r"p\.jsonl:2: " + message.replace("(", r"\(").replace(")", r"\)")):
            read_prompts(_write(tmp_path, '{"prompt": "fine"}\n' + line))


def _write(tmp_path, text):
    path = tmp_path / "p.jsonl"
    path.write_text(text + "\n")
    return path


def test_packing_keeps_every_example_and_its_mask(tok):
    examples, skipped = encode_conversations(conversations(23), tok, max_len=200)
    assert skipped == 0
    X, Y = pack(examples, row_len=64, pad_id=tok.pad, seed=3)
    assert X.shape[1] == 64
    # Every row is whole examples end to end (each starts with <|endoftext|>), then padding with no loss. Cut the rows
    # back into examples and compare with what the template produced.
    got = []
    for x, y in zip(X.tolist(), Y.tolist()):
        used = x.index(tok.pad) if tok.pad in x else len(x)  # the pad token never occurs in text
        starts = [i for i, t in enumerate(x) if t == tok.eot] + [used]
        for a, b in zip(starts, starts[1:]):
            got.append((x[a:b], y[a:b]))
        assert all(t == tok.pad for t in x[starts[-1]:]) and all(t == -1 for t in y[starts[-1]:])
    want = [to_inputs_targets(ids, mask) for ids, mask in examples]
    assert sorted(got) == sorted(want)
    for x, y in want:  # a target is the next input token where it is not -1
        assert all(t == -1 or t == nxt for t, nxt in zip(y, x[1:] + [tok.end]))


def test_padded_batches_are_pure_visit_every_example_and_split_across_ranks(tok):
    examples, _ = encode_conversations(conversations(40), tok, max_len=200)
    one = SFTBatches(examples, batch_size=4, pad_id=tok.pad, seed=1)
    x, y, w = one.batch(5, 0)
    assert torch.equal(x, one.batch(5, 0)[0]) and torch.equal(y, one.batch(5, 0)[1])
    assert w == 1.0  # one process, one micro-batch: the micro-batch is the whole step
    assert (y[x == tok.pad] == -1).all()  # right padding never carries a loss
    # Ten steps of four are one epoch: every conversation exactly once.
    firsts = sorted(tuple(r[r != tok.pad].tolist()) for s in range(10) for r in one.batch(s, 0)[0])
    assert firsts == sorted(tuple(to_inputs_targets(*e)[0]) for e in examples)
    # Two ranks with two rows each see the one-process batch, and their weights make the step's loss the mean over
    # all of its target tokens: w_r * mean_r averaged over ranks = sum of losses / total tokens.
    ranks = [SFTBatches(examples, batch_size=2, pad_id=tok.pad, seed=1, rank=r, world=2) for r in range(2)]
    parts = [r.batch(5, 0) for r in ranks]
    rows = [row[row != tok.pad].tolist() for part in parts for row in part[0]]
    assert rows == [row[row != tok.pad].tolist() for row in x]
    n = [int((p[1] != -1).sum()) for p in parts]
    assert [p[2] for p in parts] == [pytest.approx(2 * k / sum(n)) for k in n]


def test_validation_loss_is_token_weighted(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    examples, _ = encode_conversations(conversations(7), tok, max_len=64)
    with torch.no_grad():
        by_one = mean_loss(model, SFTBatches(examples, 1, tok.pad).eval_batches())
        by_three = mean_loss(model, SFTBatches(examples, 3, tok.pad).eval_batches())
        # reference: one cross-entropy over every target token of every example
        logits, targets = [], []
        for ids, mask in examples:
            x, y = to_inputs_targets(ids, mask)
            logits.append(model(torch.tensor([x]))[0][0])
            targets.append(torch.tensor(y))
        ref = torch.nn.functional.cross_entropy(torch.cat(logits), torch.cat(targets), ignore_index=-1).item()
    assert by_one == pytest.approx(ref, rel=1e-5) and by_three == pytest.approx(ref, rel=1e-5)


# ----- ROUGE-L and Self-Instruct's filter ----------------------------------------------------------------------------

def test_rouge_l_against_hand_computed_values():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # CLRS's example: BCBA
    # "the cat sat on the mat" vs "the cat lay on the mat": LCS = the cat on the mat = 5; P = R = 5/6
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # candidate "police killed the gunman", reference "the gunman was shot down by police" (Lin 2004, §3.1 style):
    # LCS = "the gunman" = 2; P = 2/4, R = 2/7, F = 2PR/(P+R) = 4/11
    p, r, f = rouge_l_scores("police killed the gunman", "the gunman was shot down by police")
    assert (p, r) == (pytest.approx(0.5), pytest.approx(2 / 7)) and f == pytest.approx(4 / 11)
    assert rouge_l("Hello, WORLD!", "hello world") == 1.0  # lower-cased, punctuation separates
    assert rouge_l("", "anything") == 0.0 and rouge_l("a b", "c d") == 0.0


def test_self_instruct_keeps_only_novel_instructions():
    si = script("data/self_instruct.py")
    assert si["parse_instructions"](" Name three colours.\nTask 10: Sort these numbers.\nTask 11:") == \
        ["Name three colours.", "Sort these numbers."]
    seeds = ["Give me three tips for staying healthy.", "Write a poem about the sea."]
    proposals = iter([
        "Give me three tips for staying healthy today.\nTask 10: Explain how rainbows form.",  # 1st: too similar
        "Explain how rainbows form.\nTask 10: Describe this picture of a cat.\nTask 11: Hi\nTask 12: ?? What now",
        "Translate the sentence into French.",
    ])
    new, stats = si["bootstrap"](lambda prompts: [next(proposals) for _ in prompts], seeds, num_instructions=10,
                                 max_rounds=3, batch_size=1, num_shots=2, log=lambda s: None)
    assert new == ["Explain how rainbows form.", "Translate the sentence into French."]
    assert stats == {"kept": 2, "similar (ROUGE-L)": 1, "duplicate": 1, "needs another modality": 1,
                     "too short": 1, "punctuation start": 1}
    # 0.7 is the boundary: ROUGE-L F of the rejected one with its seed is 2*7/(8+7) = 0.933 >= 0.7
    assert rouge_l("Give me three tips for staying healthy today.", seeds[0]) == pytest.approx(14 / 15)
    prompt = si["few_shot_prompt"](seeds)
    assert prompt == ("Come up with a series of tasks:\n\nTask 1: Give me three tips for staying healthy.\n"
                      "Task 2: Write a poem about the sea.\nTask 3:")
