"""Tinyworld chat data: the instruction / preference / feedback / evaluation sets, sampled from the chat tasks.

The last part of the Tinyworld generator (world.py holds the entities, facts, pretraining text and web pages;
tasks.py every prompt it can emit, each with a Spec: the oracle answer and what the gold scorer, gold.py, needs to
judge any other answer). ``build_chat(world, cfg)`` makes these files:

    sft_train/val.jsonl        {"messages": [{"role", "content"}, ...], "writer"}: questions and small tasks, split A
                               only, each answered by one writer of mixed quality (writers.py); a share are
                               questions the world cannot answer
    label_prompts.jsonl        {"prompt", "kind", "split", "harmful", "unknown"}: what data/label.py has the SFT model
                               answer several times and simulated labellers rank
    prefs_helpful_train/val    {"prompt", "chosen", "rejected", "kind"}: right vs wrong fact/wrong person/off-topic/
                               rude/rambling/needless refusal
    prefs_safe_train/val       same: harmful -> refusal over compliance, any other non-refusal or the refusal of
                               another request; benign -> help over a needless refusal (generic, naming the subject
                               as good refusals do, or the refusal of a harmful request about the same subject)
    feedback_train.jsonl       {"prompt", "completion", "label"}: unpaired thumbs up / down (KTO)
    eval_b / eval_zh / eval_prompts / eval_harmful / eval_benign / eval_unknown .jsonl   held-out prompts
    rl_prompts.jsonl           prompts for PPO / online DPO (as label_prompts.jsonl)

It has no CLI of its own; generate.write_world() calls build_chat(), so run:

    python data/tinyworld.py --out data/tinyworld --seed 0
"""
from __future__ import annotations

import random
import re

from nanotrain.errors import DataError
from nanotrain.tinyworld.world import PERSON_FACTS, Person, World, WorldConfig, person_slots
from nanotrain.tinyworld.tasks import (ANIMAL_FACTS, CHAT, COMPARE, HARMFUL, NEAR_HARMFUL, NEEDLESS_REFUSALS,
                                       QUESTIONS_EN, QUESTIONS_ZH, RETELL, RETELL_ASK, RUDE, SYSTEM_PROMPTS,
                                       UNKNOWN_ANSWERS, Spec, Tasks)
from nanotrain.tinyworld.writers import CLOSING_OTHERS, pick_writer, write

FACT_WEIGHTS = dict(town=1, job=1, food=1, colour=1, age=1, friend=1, pet=0.5, species=0.3, fur=0.3, owner=0.3,
                    landmark=0.1)


def sample_benign(tk: Tasks, rng: random.Random, split: str) -> Spec:
    """A random benign request about people of ``split``: facts mostly, then small tasks."""
    folk, r = tk.w.split(split), rng.random()
    if r < 0.55:  # few towns and pets: ask about them less often, or their few prompts run out
        subjects = {k: tk.fact_subjects(k, None if k == "landmark" else split) for k in FACT_WEIGHTS}
        attrs = [k for k in FACT_WEIGHTS if subjects[k]]  # (a split may have no pets)
        attr = rng.choices(attrs, [FACT_WEIGHTS[k] for k in attrs])[0]
        subj = rng.choice(subjects[attr])
        return tk.fact(attr, subj, rng.randrange(len(QUESTIONS_EN[attr])))
    if r < 0.62:
        return tk.describe(rng.choice(folk), rng.randrange(4))
    if r < 0.67:
        return tk.story_about(rng.choice(folk), rng.randrange(3))
    if r < 0.77:
        kind = rng.choice(list(COMPARE))
        ps = rng.sample(folk, 2 if kind in ("same_town", "older", "younger") else min(len(folk), rng.randint(3, 4)))
        while kind in ("older", "younger") and ps[0].age == ps[1].age:
            ps = rng.sample(folk, 2)
        return tk.compare(kind, ps, rng.randrange(len(COMPARE[kind])), rng)
    if r < 0.82:
        return tk.retell(rng.choice(folk), rng.randrange(len(RETELL)), rng.randrange(len(RETELL_ASK)), rng)
    if r < 0.95:
        return sample_near_harmful(tk, rng, folk)
    return tk.chat(rng.randrange(len(CHAT) + 2))


def sample_near_harmful(tk: Tasks, rng: random.Random, folk: list[Person]) -> Spec:
    owners = [p for p in folk if p.name in tk.w.pet_of]
    kind = rng.choice([k for k in NEAR_HARMFUL if k != "petcare" or owners])
    n = len(NEAR_HARMFUL[kind][0])
    return tk.near_harmful(kind, rng.choice(owners if kind == "petcare" else folk), rng.randrange(n))


def sample_harmful(tk: Tasks, rng: random.Random, split: str, held_out_templates: bool = False) -> Spec:
    """A harmful request; training data never uses the last template of a kind (kept for eval_harmful)."""
    kind = rng.choice([k for k in HARMFUL if tk.harmful_subjects(k, "-" if k == "fire" else split)])
    subj = rng.choice(tk.harmful_subjects(kind, "-" if kind == "fire" else split))
    n = len(HARMFUL[kind][0])
    return tk.harmful(kind, subj, n - 1 if held_out_templates else rng.randrange(n - 1))


def sample_label_prompt(tk: Tasks, rng: random.Random) -> Spec:
    """A prompt for the labelling stage (label_prompts.jsonl; bench/rm_fresh_prompts.py draws more of the same):
    benign questions and tasks, look-alikes of harmful requests, harmful requests and questions the world cannot
    answer. (Harmful requests and what the world cannot answer are few, 10% each: a thumbs up there mostly goes to a
    refusal or an "I don't know", and with more of them KTO learned to answer everything that way.)"""
    r = rng.random()
    if r < 0.1:
        return tk.unknown("train", rng)
    if r < 0.2:
        return sample_harmful(tk, rng, "A")
    return sample_near_harmful(tk, rng, tk.w.split("A")) if r < 0.4 else sample_benign(tk, rng, "A")


def rejected(tk: Tasks, spec: Spec, rng: random.Random, how: str) -> str:
    """A worse reply to spec.prompt: a wrong fact, about the wrong person, off-topic, rude, rambling or a needless
    refusal."""
    if how == "wrong" and spec.bad and not spec.harmful:
        return spec.bad  # (tasks without a fluent wrong answer fall through to an off-topic one)
    if how == "rude":
        return rng.choice(RUDE).format(a=spec.answer)
    if how == "rambling":
        return rng.choice(["{a} Let me say it again: {a} As I said, {a} I hope this helps, I hope this helps, I hope this helps.",
                           "Well, well, well, let me think, let me think. {a} {a} {a} That is all, that is all, that is all."]
                          ).format(a=spec.answer)
    if how == "refusal":
        return needless_refusal(tk, spec, rng)
    if how == "wrong_person":  # the right kind of answer about someone else: "Tom's bicycle is red." for Lena's
        names = [g[0] for g in spec.topic if g[0] in tk.named]
        if names:
            who = rng.choice(names)
            other = rng.choice([n for n in tk.named if n != who and tk.named[n] == tk.named[who]])
            return re.sub(rf"\b{re.escape(who)}\b", other, spec.answer)
    while True:  # off topic: the right answer to a different question about someone else
        other = sample_benign(tk, rng, "A")
        if other.kind != spec.kind and not set(map(tuple, other.topic)) & set(map(tuple, spec.topic)):
            return other.answer


HELPFUL_FAULTS = ["wrong"] * 7 + ["wrong_person"] * 3 + ["off_topic"] * 2 + ["rude"] * 3 + ["rambling"] * 2 + ["refusal"] * 3
SPECIFIC_REFUSALS = ["I'm sorry, but I can't help with questions about {N}.",
                     "I'm sorry, but I can't help with that. {N} deserves privacy and kindness.",
                     "I'm sorry, but I can't help with anything that could upset {N}."]


def needless_refusal(tk: Tasks, spec: Spec, rng: random.Random) -> str:
    """A refusal of a benign request: generic, naming its subject the way good refusals of harmful ones do, or the
    very refusal a harmful request about the same person or pet gets ("I can't help with hurting Rex" to "What does
    Rex need to stay healthy?", the over-refusal a model taught to refuse such requests makes), so that whether a
    refusal is right can only be told from the prompt."""
    names = [g[0] for g in spec.topic if g and g[0][:1].isupper()]
    r = rng.random()
    if names and r < 0.35:
        return rng.choice(SPECIFIC_REFUSALS).format(N=names[0])
    subject = names[0] if names else None
    pet = tk.w.animal.get(subject)
    owner = pet.owner if pet else subject
    if owner in tk.w.person and r < 0.7:
        kinds = ["hurt_pet"] if pet else [k for k in HARMFUL
                                          if k != "fire" and (k != "hurt_pet" or owner in tk.w.pet_of)]
        return HARMFUL[rng.choice(kinds)][1].format(**person_slots(tk.w, tk.w.person[owner]))
    return rng.choice(NEEDLESS_REFUSALS)


def unsafe_reply(tk: "Tasks", spec: Spec, rng: random.Random) -> str:
    """A reply that does not refuse a harmful request: the fluent compliance, or any friendly non-refusal (the answer
    to a harmless request that sounds alike, or to some other question), which is no refusal either."""
    r = rng.random()
    if r < 0.5:
        return spec.bad
    return sample_near_harmful(tk, rng, tk.w.split("A")).answer if r < 0.75 else sample_benign(tk, rng, "A").answer


def prompt_record(spec: Spec) -> dict:
    """A prompt to answer (PPO, online DPO, the labelling stage), with what it is."""
    return {"prompt": spec.prompt, "kind": spec.kind, "split": spec.split, "harmful": spec.harmful,
            "unknown": spec.kind == "unknown"}


def eval_record(spec: Spec) -> dict:
    return {"prompt": spec.prompt, "answer": spec.answer, "kind": spec.kind, "split": spec.split,
            "lang": spec.lang, "harmful": spec.harmful, "chance": round(spec.chance, 4)}


def build_chat(w: World, cfg: WorldConfig) -> tuple[dict[str, list[dict]], Tasks]:
    """All instruction, preference, feedback and evaluation records, and the Tasks holding every Spec."""
    tk, rng = Tasks(w), random.Random(f"tinyworld-{cfg.seed}-chat")
    # Who wrote each demonstration (writers.py), and the questions the world cannot answer, draw from streams of
    # their own, so the prompts of every other file stay what they would be without them.
    wrng, urng = random.Random(f"tinyworld-{cfg.seed}-writers"), random.Random(f"tinyworld-{cfg.seed}-unknown")
    held: set[str] = set()  # prompts of the held-out files: never used verbatim by any training file

    def draw(sample, avoid=held, fail=True):  # a sample whose prompt is not in avoid
        for _ in range(200):
            spec = sample()
            if spec.prompt not in avoid:
                return spec
        if fail:
            raise DataError("tinyworld ran out of fresh prompts: use smaller sizes or more people")

    def unique(n, sample):
        out = []
        for _ in range(n):
            spec = draw(sample, fail=False)
            if spec is None:  # a small world has few fresh prompts: write fewer rather than repeat one
                break
            out.append(spec)
            held.add(spec.prompt)
        return out

    f = {}
    # -- held-out evaluation first, so that training files can avoid their prompts
    b_specs = [tk.fact(attr, x, rng.randrange(len(QUESTIONS_EN[attr])))
               for attr in PERSON_FACTS + ["pet"] + ANIMAL_FACTS for x in tk.fact_subjects(attr, "B")]
    held.update(s.prompt for s in b_specs)
    f["eval_b"] = [eval_record(s) for s in b_specs]

    def zh_fact():
        attr = rng.choice(list(QUESTIONS_ZH))
        subj = rng.choice(tk.fact_subjects(attr, None))
        return tk.fact(attr, subj, rng.randrange(len(QUESTIONS_ZH[attr])), zh=True)
    zh = unique(cfg.n_eval(cfg.eval_zh), zh_fact)
    f["eval_zh"] = [dict(eval_record(s), answer_en=tk.fact(s.kind, *_subject(tk, s), 0).answer) for s in zh]
    f["eval_prompts"] = [eval_record(s) for s in unique(cfg.n_eval(cfg.eval_prompts), lambda: sample_benign(tk, rng, "A"))]
    f["eval_harmful"] = [eval_record(s) for s in unique(cfg.n_eval(cfg.eval_harmful), lambda: sample_harmful(
        tk, rng, rng.choice("AB"), held_out_templates=rng.random() < 0.5))]

    def near():
        if rng.random() < 0.3:
            return sample_benign(tk, rng, rng.choice("AB"))
        return sample_near_harmful(tk, rng, w.split(rng.choice("AB")))
    f["eval_benign"] = [eval_record(s) for s in unique(cfg.n_eval(cfg.eval_benign), near)]
    f["eval_unknown"] = [eval_record(s) for s in unique(cfg.n_eval(cfg.eval_unknown), lambda: tk.unknown("eval", urng))]
    def rl_prompt():  # harmful requests and their harmless look-alikes, as LLaMA 2's RLHF prompts hold both
        r = rng.random()
        return sample_harmful(tk, rng, "A") if r < 0.25 else sample_near_harmful(tk, rng, w.split("A")) if r < 0.4 \
            else sample_benign(tk, rng, "A")
    rl = unique(cfg.n(cfg.rl_prompts), rl_prompt)
    # PPO's prompts also ask what the world cannot answer (from the training half of unused names: not held out)
    rl += [tk.unknown("train", urng) for _ in range(round(cfg.rl_unknown * len(rl)))]
    urng.shuffle(rl)
    f["rl_prompts"] = [prompt_record(s) for s in rl]

    # -- SFT: every split-A fact asked once, then a mix with --sft-harmful harmful requests answered with a refusal
    # (with fewer, the SFT model misses short ones even among its own training prompts, "How can I steal Alan's
    # lamp?" answered as if it asked to borrow it, and more of the never-trained phrasings) and --sft-lookalike of
    # their harmless look-alikes answered (with only the benign mix's few, it refuses them too, the petcare ones most).
    # Validation prompts are drawn first, so a large --scale can never use up the fresh ones.
    def sft_one(harmful=False):
        return sample_harmful(tk, rng, "A") if harmful else sample_benign(tk, rng, "A")

    def conversation(first: Spec, avoid: set) -> dict:
        turns = [first]
        if rng.random() < 0.07 and first.kind in QUESTIONS_EN and first.split == "A":
            subj = _subject(tk, first)[0]
            for _ in range(rng.randint(1, 2)):  # a follow-up about the same person or pet
                attr = rng.choice([x for x in QUESTIONS_EN if subj in tk.fact_subjects(x)])
                nxt = draw(lambda: tk.fact(attr, subj, rng.randrange(len(QUESTIONS_EN[attr]))), avoid, fail=False)
                turns += [nxt] if nxt else []
        msgs = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.03 else []
        writer = pick_writer(first, wrng, cfg.careful)  # one writer answers the whole conversation
        for s in turns:
            reply = write(tk, s, writer, wrng, cfg.closing if writer == "careful" else CLOSING_OTHERS)
            msgs += [{"role": "user", "content": s.prompt}, {"role": "assistant", "content": reply}]
        return {"messages": msgs, "writer": writer}

    def users(convs: list[dict]) -> set:
        return {m["content"] for c in convs for m in c["messages"] if m["role"] == "user"}

    n_sft = cfg.n(cfg.sft)
    f["sft_val"] = [conversation(draw(lambda: sft_one(rng.random() < 0.05)), held) for _ in range(max(8, n_sft // 20))]
    avoid = held | users(f["sft_val"])
    cover = [draw(lambda: tk.fact(attr, x, rng.randrange(len(QUESTIONS_EN[attr]))), avoid, fail=False)
             for attr in QUESTIONS_EN for x in tk.fact_subjects(attr, None if attr == "landmark" else "A")]
    cover = [s for s in cover if s is not None][:n_sft // 2]  # (a tiny --scale keeps room for the mix)
    n_harm, n_unknown = round(cfg.sft_harmful * n_sft), round(cfg.sft_unknown * n_sft)
    n_look = round(cfg.sft_lookalike * n_sft)
    sft = [conversation(s, avoid) for s in cover]
    sft += [conversation(draw(lambda: sft_one(True), avoid), avoid) for _ in range(n_harm)]
    sft += [conversation(draw(lambda: sample_near_harmful(tk, rng, w.split("A")), avoid), avoid) for _ in range(n_look)]
    sft += [conversation(tk.unknown("train", urng), avoid) for _ in range(n_unknown)]
    sft += [conversation(draw(sft_one, avoid), avoid) for _ in range(n_sft - len(sft))]
    rng.shuffle(sft)
    f["sft_train"] = sft

    # -- prompts for the labelling stage (data/label.py): the SFT model answers each several times and simulated
    # labellers rank the answers (sample_label_prompt says what they ask); none of them is a held-out prompt.
    f["label_prompts"] = [prompt_record(draw(lambda: sample_label_prompt(tk, urng), held))
                          for _ in range(cfg.n(cfg.label_prompts))]

    # -- preference pairs: helpfulness (benign prompts) and safety (harmful and benign prompts)
    def helpful_pair(avoid):
        s = draw(lambda: sample_benign(tk, rng, "A"), avoid)
        how = rng.choice(HELPFUL_FAULTS)
        return {"prompt": s.prompt, "chosen": s.answer, "rejected": rejected(tk, s, rng, how), "kind": how}

    def safe_pair(avoid):
        if rng.random() < 0.5:
            s = draw(lambda: sample_harmful(tk, rng, "A"), avoid)
            if rng.random() < 0.25:  # a refusal is better when it names what it refuses (gold: topic): a generic
                # one loses. (As the chosen reply over a compliance instead, it taught the safety reward model to
                # prefer generic refusals, and PPO against it turned the SFT model's specific refusals generic.)
                return {"prompt": s.prompt, "chosen": s.answer, "rejected": rng.choice(NEEDLESS_REFUSALS),
                        "kind": "harmful"}
            if rng.random() < 0.75:
                bad = unsafe_reply(tk, s, rng)
            else:  # ... and names the right subject: the refusal of another request loses
                bad = s.answer
                while bad == s.answer:
                    bad = sample_harmful(tk, rng, "A").answer
            return {"prompt": s.prompt, "chosen": s.answer, "rejected": bad, "kind": "harmful"}
        # half of the benign prompts are borderline ones that sound harmful (LLaMA 2 §4.2.2 adds such prompts
        # against false refusals): eval_benign is made of them
        s = draw(lambda: sample_near_harmful(tk, rng, w.split("A")) if rng.random() < 0.5
                 else sample_benign(tk, rng, "A"), avoid)
        return {"prompt": s.prompt, "chosen": s.answer, "rejected": needless_refusal(tk, s, rng), "kind": "benign"}

    # A harmful request is refused, not pleaded ignorance of: the policies learn to say "I don't know anyone called
    # Zelda in Tinyworld." to what the world cannot answer, and without these pairs DPO and KTO also said it to
    # harmful requests in phrasings they never trained on. Drawn from a stream of their own, so every file before
    # the safety pairs is as version 8 wrote it; shuffled in, as KTO reads the first of them.
    arng = random.Random(f"tinyworld-{cfg.seed}-admissions")

    def admission_pair(avoid):
        s = draw(lambda: sample_harmful(tk, arng, "A"), avoid)
        kind = arng.choice(["person", "pet", "town", "outside"])
        name = arng.choice(tk.strangers["train"][kind]) if kind != "outside" else ""
        return {"prompt": s.prompt, "chosen": s.answer, "rejected": UNKNOWN_ANSWERS[kind].format(N=name, P=name, T=name),
                "kind": "harmful"}

    for name, make, n in (("helpful", helpful_pair, cfg.n(cfg.prefs_helpful)), ("safe", safe_pair, cfg.n(cfg.prefs_safe))):
        admissions = round(cfg.prefs_admissions * n) if name == "safe" else 0
        val, avoid = [], set(held)
        for make_one, k in ((make, max(8, n // 10)), (admission_pair, admissions // 10)):
            for _ in range(k):  # held-out prompts (split A): each used once, never in train
                val.append(make_one(avoid))
                avoid.add(val[-1]["prompt"])
        train = [make(avoid) for _ in range(n)] + [admission_pair(avoid) for _ in range(admissions)]
        if admissions:
            arng.shuffle(val)
            arng.shuffle(train)
        f[f"prefs_{name}_val"], f[f"prefs_{name}_train"] = val, train

    # -- unpaired binary feedback (KTO): 1-2 completions per prompt, ~60% thumbs up, rates differ by kind
    fb = []
    while len(fb) < cfg.n(cfg.feedback):
        harmful = rng.random() < 0.2
        borderline = not harmful and rng.random() < 0.25
        s = draw(lambda: sample_harmful(tk, rng, "A") if harmful else sample_near_harmful(tk, rng, w.split("A"))
                 if borderline else sample_benign(tk, rng, "A"))
        for _ in range(1 if rng.random() < 0.7 else 2):
            if rng.random() < (0.5 if harmful else 0.65):
                fb.append({"prompt": s.prompt, "completion": s.answer, "label": True})
            else:
                bad = (unsafe_reply(tk, s, rng) if harmful else needless_refusal(tk, s, rng) if borderline
                       else rejected(tk, s, rng, rng.choice(HELPFUL_FAULTS)))
                fb.append({"prompt": s.prompt, "completion": bad, "label": False})
    f["feedback_train"] = fb
    return f, tk


def _subject(tk: Tasks, spec: Spec) -> tuple:
    """The subject of a fact Spec (a Person, an Animal or a town name), found from its topic."""
    name = spec.topic[0][0]
    return (tk.w.person.get(name) or tk.w.animal.get(name) or name,)
