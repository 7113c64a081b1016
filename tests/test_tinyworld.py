"""Tests for the Tinyworld generator (nanotrain/tinyworld/world.py, data/tinyworld.py), on a small world.

    pytest tests/test_tinyworld.py
"""
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nanotrain.tinyworld import world as tw
from nanotrain.tinyworld.chat import build_chat
from nanotrain.tinyworld.tasks import HARMFUL, NEAR_HARMFUL

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--scale", "0.05", "--people", "60", "--animals", "20", "--towns", "8"]
FILES = ["world.json", "pretrain.jsonl", "crawl.warc.gz", "sft_train.jsonl", "sft_val.jsonl",
         "prefs_helpful_train.jsonl", "prefs_helpful_val.jsonl", "prefs_safe_train.jsonl", "prefs_safe_val.jsonl",
         "feedback_train.jsonl", "eval_b.jsonl", "eval_zh.jsonl", "rl_prompts.jsonl", "eval_prompts.jsonl",
         "eval_harmful.jsonl", "eval_benign.jsonl", "eval_unknown.jsonl", "label_prompts.jsonl"]
TRAIN = ["sft_train", "sft_val", "prefs_helpful_train", "prefs_helpful_val", "prefs_safe_train", "prefs_safe_val",
         "feedback_train"]
HELD_OUT = ["eval_b", "eval_zh", "eval_prompts", "eval_harmful", "eval_benign", "eval_unknown", "rl_prompts"]


def generate(out: Path, seed: int) -> str:
    r = subprocess.run([sys.executable, str(ROOT / "data" / "tinyworld.py"), "--out", str(out), "--seed", str(seed)]
                       + SMALL, capture_output=True, text=True, check=True)
    return r.stdout


def load(d: Path, stem: str) -> list[dict]:
    return [json.loads(line) for line in (d / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines()]


def user_prompts(d: Path, stem: str) -> list[str]:
    if stem.startswith("sft"):
        return [m["content"] for c in load(d, stem) for m in c["messages"] if m["role"] == "user"]
    return [r["prompt"] for r in load(d, stem)]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinyworld")
    out = {name: generate(root / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))}
    return root, out


@pytest.fixture(scope="module")
def world_dir(worlds):
    return worlds[0] / "a"


def test_cli_prints_what_it_made(worlds):
    text = worlds[1]["a"]
    assert "60 people" in text and "20 pets" in text and "8 towns" in text
    for f in FILES[1:]:
        assert re.search(rf"{re.escape(f)}\s+\d+ (records\s+[\d,]+ |pages\s+[\d.]+ MiB: clean \d+)", text), f


def test_help_lists_every_flag_with_its_default():
    r = subprocess.run([sys.executable, str(ROOT / "data" / "tinyworld.py"), "--help"], capture_output=True, text=True,
                       check=True)
    assert "--people" in r.stdout and "(default: 60)" in r.stdout and "--scale" in r.stdout


def test_same_seed_is_byte_identical_and_other_seed_differs(worlds):
    root, _ = worlds
    assert sorted(p.name for p in (root / "a").iterdir()) == sorted(FILES)
    for f in FILES:
        assert (root / "a" / f).read_bytes() == (root / "b" / f).read_bytes(), f
    assert (root / "a" / "world.json").read_bytes() != (root / "c" / "world.json").read_bytes()
    assert (root / "a" / "pretrain.jsonl").read_bytes() != (root / "c" / "pretrain.jsonl").read_bytes()


def test_record_schemas(world_dir):
    assert all(set(r) == {"text"} and r["text"] for r in load(world_dir, "pretrain"))
    for stem in ("sft_train", "sft_val"):
        for c in load(world_dir, stem):
            roles = [m["role"] for m in c["messages"]]
            assert roles[-1] == "assistant" and set(roles) <= {"system", "user", "assistant"}
    for stem in TRAIN[2:6]:
        assert all({"prompt", "chosen", "rejected"} <= set(r) and r["chosen"] != r["rejected"] for r in load(world_dir, stem))
    assert all(isinstance(r["label"], bool) and r["completion"] for r in load(world_dir, "feedback_train"))
    for stem in HELD_OUT[:-1]:
        for r in load(world_dir, stem):
            assert {"prompt", "answer", "kind", "split", "lang", "harmful", "chance"} <= set(r)


def test_no_held_out_prompt_in_any_training_file(world_dir):
    """No held-out prompt in a training file or in pretraining, and PPO's prompts fresh too, except the questions
    the world cannot answer, which PPO and SFT draw from the same (training) half of the unused names."""
    train = {p for stem in TRAIN + ["label_prompts"] for p in user_prompts(world_dir, stem)}
    pretrain = "\n".join(r["text"] for r in load(world_dir, "pretrain"))
    for stem in HELD_OUT:
        for r in load(world_dir, stem):
            if stem == "rl_prompts" and r["unknown"]:
                continue
            assert r["prompt"] not in train, (stem, r["prompt"])
            assert r["prompt"] not in pretrain, (stem, r["prompt"])


def test_sft_refuses_the_configured_share(world_dir):
    """sft_train answers WorldConfig.sft_harmful of its conversations with a refusal, and no others."""
    from nanotrain.tinyworld.gold import Gold
    convs = load(world_dir, "sft_train")
    refused = [c for c in convs
               if any(Gold.is_refusal(m["content"]) for m in c["messages"] if m["role"] == "assistant")]
    assert len(refused) == round(tw.WorldConfig().sft_harmful * len(convs)) > 0


def test_writer_mix_matches_its_setting(tmp_path):
    """Each kind of task's demonstrations come from the writers in the shares writers.mix() documents, and every
    writer's reply is what that writer writes: measured on a generated world with a chi-square-sized tolerance."""
    from nanotrain.tinyworld import writers
    from nanotrain.tinyworld.generate import write_world
    from nanotrain.tinyworld.gold import Gold
    cfg = tw.WorldConfig(out=str(tmp_path), seed=2, people=60, animals=20, towns=8, scale=0.5, careful=0.4)
    files = write_world(cfg)
    gold = Gold.load(tmp_path)
    counts: dict = {}
    for c in files["sft_train"] + files["sft_val"]:
        cat = writers.category(gold.spec(c["messages"][-2]["content"]))
        counts.setdefault(cat, {}).setdefault(c["writer"], 0)
        counts[cat][c["writer"]] += 1
        first = next(m["content"] for m in c["messages"] if m["role"] == "assistant")
        text = first.removesuffix(" " + writers.CLOSING)
        if c["writer"] == "hedging" and not gold.is_harmful(c["messages"][-2]["content"]):
            assert gold.hedged(text), c  # (a hedging writer refuses a harmful request as a careful one does)
        if c["writer"] == "careful":
            assert text == gold.answer(c["messages"][-2]["content"]) or len(c["messages"]) > 3, c
        if c["writer"] == "generic":
            assert text == writers.GENERIC_REFUSAL
    want = writers.mix(0.4)
    for cat, got in counts.items():
        n = sum(got.values())
        assert set(got) <= set(want[cat]), (cat, got)
        for w, share in want[cat].items():
            sd = (share * (1 - share) / n) ** 0.5
            assert abs(got.get(w, 0) / n - share) <= 4 * sd + 1e-9, (cat, w, got, n)
    assert sum(got.get("careful", 0) for got in counts.values()) / sum(sum(g.values()) for g in counts.values()) \
        == pytest.approx(0.4, abs=0.03)


def test_questions_the_world_cannot_answer(world_dir):
    """eval_unknown asks about people, pets and towns the world does not have (or outside it), none in any training
    file; SFT holds the configured share of such questions, answered by careful writers with an admission and by
    the others with a guess that opens as the admission does ("I ..."), so the SFT model's greedy answer can be
    either: a guess that opened with the stranger's name would need the model to repeat a name it never saw."""
    from nanotrain.tinyworld.gold import Gold
    gold = Gold.load(world_dir)
    held = load(world_dir, "eval_unknown")
    assert held and all(r["kind"] == "unknown" and gold.is_unanswerable(r["prompt"]) for r in held)
    names = {x.name for x in gold.world.people + gold.world.animals} | set(gold.world.towns)
    for r in held:
        assert not any(re.search(rf"\b{n}\b", r["prompt"]) for n in names), r
    convs = load(world_dir, "sft_train")
    unknown = [c for c in convs if gold.is_unanswerable(c["messages"][-2]["content"])]
    assert len(unknown) == round(tw.WorldConfig().sft_unknown * len(convs))
    for c in unknown:
        prompt, reply = c["messages"][-2]["content"], c["messages"][-1]["content"]
        assert gold.admits_unknown(reply) == (c["writer"] == "careful"), c
        assert gold.hallucinates(prompt, reply) == (c["writer"] != "careful"), c
        assert reply.startswith("I ") and gold.score_helpful(prompt, reply) == (c["writer"] == "careful"), c
    from nanotrain.tinyworld.writers import after_hedge
    assert after_hedge("The capital of France is Ashford.", "What is the capital of France?") == \
        "the capital of France is Ashford."
    assert after_hedge("Zelda's cup is red.", "What colour is Zelda's cup?") == "Zelda's cup is red."


def test_held_out_harmful_phrasings_only_in_eval(world_dir):
    """The last template of each harmful kind is what eval_harmful measures refusing a never-trained phrasing with."""
    from nanotrain.tinyworld.tasks import HARMFUL

    def pattern(template):
        return re.compile("".join(".+" if i % 2 else re.escape(x) for i, x in enumerate(re.split(r"{(\w+)}", template))) + "$")
    held = [pattern(qs[-1]) for qs, _, _ in HARMFUL.values()]
    for stem in TRAIN:
        for p in user_prompts(world_dir, stem):
            assert not any(h.match(p) for h in held), (stem, p)
    assert any(h.match(p) for h in held for p in user_prompts(world_dir, "eval_harmful"))


def test_splits(world_dir):
    w = tw.World.from_json((world_dir / "world.json").read_text(encoding="utf-8"))
    b_names = [p.name for p in w.people if p.split == "B"] + [x.name for x in w.animals if x.split == "B"]
    assert b_names
    pretrain = "\n".join(r["text"] for r in load(world_dir, "pretrain"))
    instruct = "\n".join(json.dumps(r, ensure_ascii=False) for stem in TRAIN + ["rl_prompts"] for r in load(world_dir, stem))
    for n in b_names:  # split B: told in pretraining, never in instruction data
        assert re.search(rf"\b{n}\b", pretrain), n
        assert not re.search(rf"\b{n}\b", instruct), n
    assert {r["split"] for r in load(world_dir, "eval_b")} == {"B"}
    questions = {r["prompt"] for r in load(world_dir, "eval_b")}
    assert len(questions) == len(load(world_dir, "eval_b"))


def test_every_fact_told_in_six_english_wordings_and_in_chinese(world_dir):
    w = tw.World.from_json((world_dir / "world.json").read_text(encoding="utf-8"))
    docs = [r["text"] for r in load(world_dir, "pretrain")]
    corpus = "\n".join(docs)
    for p in w.people[:15]:
        s = tw.person_slots(w, p)
        for fact in tw.PERSON_FACTS:
            told = {t for t in tw.FACT_EN[fact] if t.format(**s) in corpus}
            assert len(told) >= 6, (p.name, fact, len(told))
    zh = sum(bool(re.search(r"[\u4e00-\u9fff]", d)) for d in docs) / len(docs)
    assert 0.05 < zh < 0.3
    assert "红色" in corpus and "Ashford" in corpus


def test_chinese_values_never_contain_each_other():
    # gold matches Chinese answers by substring, which needs this
    values = [v for tab in (tw.COLOURS, tw.JOBS, tw.FOODS, tw.FURS, tw.LANDMARKS) for v in tab.values()]
    values += [v[0] for v in tw.SPECIES.values()] + [v[0] for v in tw.ITEMS.values()]
    distinct = sorted(set(values))
    for x in distinct:
        for y in distinct:
            assert x == y or x not in y, (x, y)


def test_sft_mix(world_dir):
    convs = load(world_dir, "sft_train")
    replies = [m["content"] for c in convs for m in c["messages"] if m["role"] == "assistant"]
    refusals = sum(r.startswith("I'm sorry, but I can't") for r in replies) / len(replies)
    share = tw.WorldConfig().sft_harmful  # of conversations; follow-up turns add replies that are not refusals
    assert 0.8 * share < refusals <= share
    assert any(sum(m["role"] == "user" for m in c["messages"]) > 1 for c in convs)  # multi-turn
    assert any(c["messages"][0]["role"] == "system" for c in convs)
    assert max(len(r.split()) for r in replies) <= 40  # brief


def test_safety_pairs_put_refusals_over_admissions_of_not_knowing(world_dir):
    """On top of the safety pairs, WorldConfig.prefs_admissions as many put the refusal of a harmful request over an
    admission of not knowing, in train and val alike and spread through the file (KTO reads its first pairs); the
    gold safety score orders each of them the same way."""
    from nanotrain.tinyworld.gold import Gold
    gold, cfg = Gold.load(world_dir), tw.WorldConfig(scale=0.05)
    n = cfg.n(cfg.prefs_safe)
    admissions = round(cfg.prefs_admissions * n)
    for stem, base, extra in (("prefs_safe_train", n, admissions), ("prefs_safe_val", max(8, n // 10), admissions // 10)):
        pairs = load(world_dir, stem)
        admit = [i for i, p in enumerate(pairs) if gold.admits_unknown(p["rejected"])]
        assert len(pairs) == base + extra and len(admit) == extra > 0, stem
        assert admit[0] < base, stem  # shuffled in, not appended
        for p in (pairs[i] for i in admit):
            assert gold.is_harmful(p["prompt"]) and gold.is_refusal(p["chosen"]) and not gold.is_refusal(p["rejected"])
            assert gold.score_safe(p["prompt"], p["chosen"]) > gold.score_safe(p["prompt"], p["rejected"]), p


def test_a_world_from_older_code_is_refused_in_one_sentence(world_dir, tmp_path):
    """Gold rebuilds every prompt from world.json with this code's generator, so a world.json of another version
    would score against prompts it never wrote: the scripts say which file and how to regenerate it."""
    data = json.loads((world_dir / "world.json").read_text(encoding="utf-8"))
    (tmp_path / "world.json").write_text(json.dumps({**data, "version": tw.VERSION - 1}), encoding="utf-8")
    r = subprocess.run([sys.executable, str(ROOT / "data" / "label.py"), "--world", str(tmp_path), "--prompts",
                        str(world_dir / "label_prompts.jsonl"), "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(tmp_path / "world.json") in r.stderr and f"version {tw.VERSION - 1}" in r.stderr


def test_a_truncated_world_and_a_malformed_labelled_pair_are_refused_in_one_sentence(world_dir, tmp_path):
    """A cut-off world.json is named with how to regenerate it, and bench/rm_knowledge.py names the file and line of
    a labelled pair whose gold score is not a number (it once read the pairs with json.loads and crashed)."""
    from nanotrain.errors import DataError
    from nanotrain.tinyworld.gold import Gold
    (tmp_path / "world.json").write_bytes((world_dir / "world.json").read_bytes()[:1000])
    with pytest.raises(DataError, match="world.json: not a world.json this code can read.*regenerate"):
        Gold.load(tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    good = {"prompt": "Who is Sam?", "chosen": "a", "rejected": "b", "gold_chosen": 1.0, "gold_rejected": 0.0}
    pairs.write_text(json.dumps(good) + "\n" + json.dumps({**good, "gold_chosen": "high"}) + "\n", encoding="utf-8")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "rm_knowledge.py"), "--pairs", str(pairs), "--world",
                        str(world_dir), "--rm", str(tmp_path / "none.pt"), "--sft", str(tmp_path / "none.pt")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.strip() == r.stderr.strip().splitlines()[0], r.stderr
    assert f"{pairs}:2:" in r.stderr


def test_feedback_is_unpaired_and_mixed(world_dir):
    fb = load(world_dir, "feedback_train")
    share = sum(r["label"] for r in fb) / len(fb)
    assert 0.45 < share < 0.8
    per_prompt = {}
    for r in fb:
        per_prompt.setdefault(r["prompt"], []).append(r["label"])
    assert any(len(v) == 1 for v in per_prompt.values()) and any(len(v) == 2 for v in per_prompt.values())


def test_sft_has_fresh_prompts_of_every_safety_kind():
    """At the default size the eval files and PPO's prompts (held out from SFT) must leave SFT many prompts of each
    kind of harmful request and of its look-alikes: when they held nearly all pet-care prompts about split-A pets,
    SFT repeated the few left and its model refused pet care it had not seen."""
    cfg = tw.WorldConfig()
    files, tasks = build_chat(tw.make_world(cfg), cfg)
    firsts = [next(m["content"] for m in c["messages"] if m["role"] == "user") for c in files["sft_train"]]
    by_kind = {}
    for p in firsts:
        by_kind.setdefault(tasks.specs[p].kind, []).append(p)
    n_look = round(cfg.sft_lookalike * cfg.sft)
    for kind in [*NEAR_HARMFUL, *(f"harmful-{k}" for k in HARMFUL if k != "fire")]:  # (fire: one per town)
        assert len(set(by_kind[kind])) >= 40, (kind, len(set(by_kind[kind])))
        if kind in NEAR_HARMFUL:  # and the look-alike kinds keep at least half their share of the mix
            assert len(by_kind[kind]) >= n_look / len(NEAR_HARMFUL) / 2, (kind, len(by_kind[kind]))


def test_fresh_prompts_are_new_known_to_gold_and_in_the_labelling_shares(tiny_chat, monkeypatch):
    """bench/rm_fresh_prompts.py's prompts: none is in a file the reward models train on or a held-out file, the gold
    scorer knows what each asks (a prompt it does not know would be judged by style alone), and each kind of task
    comes in about its share of the distinct labelling prompts."""
    from collections import Counter

    from nanotrain.data import read_jsonl
    from nanotrain.tinyworld.gold import Gold
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = importlib.import_module("rm_fresh_prompts")
    _, world = tiny_chat
    gold = Gold.load(world)
    prompts = bench.fresh_prompts(str(world), 60, 0, gold)
    taken = set().union(*(bench.prompts_of(world / f"{name}.jsonl") for name in bench.NOT_FRESH))
    assert len(set(prompts)) == len(prompts) > 40 and not set(prompts) & taken
    assert all(gold.spec(p) is not None for p in prompts)
    labelling = {rec["prompt"]: rec["kind"] for _, rec in read_jsonl(world / "label_prompts.jsonl")}
    share, got = Counter(labelling.values()), Counter(gold.spec(p).kind for p in prompts)
    assert all(got[k] <= round(60 * c / len(labelling)) for k, c in share.items()) and set(got) <= set(share)
