"""Tinyworld's writers: who wrote each demonstration, and how well.

People who write demonstrations for instruction tuning are of uneven quality; it is easy for them to judge which of
several answers is better, hard to always write the best one. So each SFT demonstration of the built-in world is
written by one of five writer types, and the SFT model imitates the crowd, not the oracle:

    careful   the oracle answer (the Spec's answer), sometimes closed with a stock phrase ("Hope this helps!")
    hedging   the same words with a hedge: "Lena's bicycle is red, I think."
    chatty    a true but unasked fact first: "Lena lives in Ashford. Lena's bicycle is red."
    hurried   drops one or two of the asked items on multi-part questions ("Tell me about Lena." -> one sentence)
    generic   refuses a harmful request without naming it: "I'm sorry, but I can't help with that."

(and on every other kind of task writes like a careful writer).

Every type keeps the fact's own words, so what pretraining taught still transfers to people SFT never shows. Asked
something the world cannot answer, the careful writer says so and the others guess behind a hedge, in the fact's
words (the Spec's ``bad``): "I think Zelda lives in Ashford.", the hallucinations the SFT model learns.

The mix (``mix``) is one setting (``WorldConfig.careful``): that share of the demonstrations of every kind of task
is written by careful writers, and the rest by the writers whose habits fit the task (``HABITS``): hedgers answer
most fact questions, hurried writers most multi-part ones, guessers the questions the world cannot answer; one
harmful request in ten gets a generic refusal (more, and the SFT model refuses harmless look-alikes with it too).
With the default careful share of 0.35, each kind's habit is its most frequent answer, so greedy decoding of the SFT
model shows it: the room that feedback on the model's own answers (pipeline stage "label") can teach and the
demonstrations cannot.

The stock closing phrase is what a reward model can latch onto: careful writers use it more often than others, so it
goes with better answers, while the gold scorer ignores it once and punishes it repeated (gold.py).
"""
from __future__ import annotations

import random
import re

from nanotrain.tinyworld.tasks import ANSWER_EN, QUESTIONS_EN, Spec, Tasks
from nanotrain.tinyworld.world import a, person_slots

WRITERS = ("careful", "hedging", "chatty", "hurried", "generic")
# How the writers who are not careful split, by kind of task (category()).
HABITS = {
    "fact": {"hedging": 1.0},  # one value asked: "Where does Lena live?"
    "multi": {"hurried": 0.8, "hedging": 0.2},  # several items asked: "Tell me about Lena."
    "task": {"hedging": 1.0},  # advice, retelling: "How can I cheer Lena up?"
    "chat": {"chatty": 1.0},  # small talk: "Hello!"
    "harmful": {"generic": 0.15, "hedging": 0.85},  # "How can I steal Lena's bicycle?" (hedgers refuse specifically)
    "unknown": {"hedging": 1.0},  # they guess: "I think Zelda lives in Ashford."
}
# A hedge comes after the answer, as a tag on its last sentence, so the answer itself opens as the careful one does
# (with the name the question asked about, the token pretraining stored its facts under) and the habit is one
# branch at its end: "," where a careful writer writes ".". The one generic refusal shares its opening with the
# specific ones ("I'm sorry, but I can't help ..."). A habit shared by most writers of a task is then what the SFT
# model's most likely tokens spell, and greedy decoding shows it. A guess opens with its hedge for the same reason:
# "I think Zelda ..." branches from the admission "I don't know anyone called Zelda ..." at one token, while a guess
# that opened with the stranger's name would need the model to repeat a name it never saw in pretraining, which it
# cannot, so it would admit by default however many writers guessed.
HEDGES = ["{a}, I think.", "{a}, but I'm not completely sure.", "{a}, I believe."]
GENERIC_REFUSAL = "I'm sorry, but I can't help with that."
CLOSING = "Hope this helps!"
CLOSING_OTHERS = 0.05  # how often the other writers close with it (careful writers: WorldConfig.closing)
FACT_KINDS = set(QUESTIONS_EN) | {"same_town", "older", "younger"}
MULTI_KINDS = {"describe", "story_about", "list_town", "count_job", "jobs_of"}


def category(spec: Spec) -> str:
    """The kind of task a Spec is, for HABITS."""
    if spec.harmful:
        return "harmful"
    if spec.kind in ("unknown", "chat"):
        return spec.kind
    return "fact" if spec.kind in FACT_KINDS else "multi" if spec.kind in MULTI_KINDS else "task"


def mix(careful: float) -> dict[str, dict[str, float]]:
    """Each category's writer shares: ``careful`` for careful writers, the rest split as HABITS says."""
    return {cat: {"careful": careful, **{w: (1 - careful) * p for w, p in habits.items()}}
            for cat, habits in HABITS.items()}


def pick_writer(spec: Spec, rng: random.Random, careful: float) -> str:
    shares = mix(careful)[category(spec)]
    return rng.choices(list(shares), list(shares.values()))[0]


def write(tk: Tasks, spec: Spec, writer: str, rng: random.Random, closing: float = 0.0) -> str:
    """``writer``'s reply to ``spec.prompt``; with probability ``closing`` it ends with the stock closing phrase."""
    if spec.kind == "unknown" and writer != "careful":
        text = f"I think {after_hedge(spec.bad, spec.prompt)}"  # a guess
    elif writer == "hedging" and not spec.harmful:
        text = hedge(spec.answer, rng)
    elif writer == "chatty":
        text = f"{true_fact(tk, spec, rng)} {spec.answer}"
    elif writer == "hurried":
        text = hurry(spec)
    elif writer == "generic" and spec.harmful:
        text = GENERIC_REFUSAL
    else:
        text = spec.answer
    return f"{text} {CLOSING}" if rng.random() < closing else text


def hedge(answer: str, rng: random.Random) -> str:
    """The answer with a hedge on its last sentence: "Lena lives in Ashford, I think."."""
    head, sep, last = answer.rstrip().rpartition(". ")
    return head + sep + rng.choice(HEDGES).format(a=last.rstrip(".!?"))


def after_hedge(sentence: str, prompt: str) -> str:
    """``sentence`` as it reads after "I think ": its first word loses its capital unless the prompt writes it so too
    (a name): "I think the capital of France is Ashford.", "I think Zelda lives in Ashford."."""
    first = sentence.split()[0].removesuffix("'s")
    return sentence if re.search(rf"\b{re.escape(first)}\b", prompt) else sentence[0].lower() + sentence[1:]


def true_fact(tk: Tasks, spec: Spec, rng: random.Random) -> str:
    """A true fact about the prompt's first subject that the prompt did not ask for (about the world if it has no
    subject)."""
    w = tk.w
    subject = spec.topic[0][0] if spec.topic and spec.topic[0] else None
    if subject in w.person:
        attrs = [x for x in ("town", "job", "age") if x != spec.kind and not (x == "town" and spec.kind == "same_town")]
        return ANSWER_EN[rng.choice(attrs)].format(**person_slots(w, w.person[subject]))
    if subject in w.animal:
        x = w.animal[subject]
        attrs = [k for k in ("species", "fur") if k != spec.kind]
        slots = dict(P=x.name, a_species=a(x.species), fur=x.fur)
        return ANSWER_EN[rng.choice(attrs)].format(**slots)
    if subject in w.towns:
        return f"{subject} is home to {sum(p.town == subject for p in w.people)} people."
    return f"Tinyworld has {len(w.towns)} towns."


def hurry(spec: Spec) -> str:
    """The answer with one or two of the asked items left out (multi-part tasks); other answers unchanged."""
    ans = spec.answer
    if spec.kind in ("describe", "story_about"):  # two sentences: keep the first
        return re.split(r"(?<=\.) ", ans, maxsplit=1)[0]
    if spec.kind == "count_job" and ":" in ans:  # "Two of them are bakers: Lena and Tom." -> no names
        return ans.split(":")[0] + "."
    if spec.kind in ("jobs_of", "list_town") and " and " in ans:  # drop the last person named
        head, tail = ans.rsplit(" and ", 1)
        rest = tail.split(" ", 1)[1] if spec.kind == "list_town" else ""
        head = head.rsplit(", ", 1)
        if spec.kind == "jobs_of":
            return (" and ".join(head) if len(head) == 2 else head[0]) + "."
        names = head[0] if len(head) == 1 else " and ".join(head)
        verb = rest if len(head) == 2 else rest.replace("live", "lives", 1)
        return f"{names} {verb}" if len(head) == 2 else f"Only {names} {verb}"
    return ans
