"""Preference pairs and binary feedback: the data that reward models, DPO and KTO learn from.

The whole API (every loader returns plain records, so a stage never cares which format a file was in):

    Pair(messages, chosen, rejected)   messages: the conversation so far (a list of {"role", "content"}), usually
                                       ending with the user's turn; chosen / rejected: two assistant replies to it,
                                       the first preferred by a person
    Feedback(messages, completion, label)   one assistant reply with a thumbs up (True) or down (False)

    load_pairs(path) -> list[Pair]          a file, a folder (its *.jsonl / *.jsonl.gz) or "a.jsonl,b.jsonl"
    load_feedback(path) -> list[Feedback]
    split_pairs(pairs, val_fraction, seed) -> (train, val)   held out by prompt, so no prompt is in both halves

Pair formats, recognised record by record:
    {"prompt", "chosen", "rejected"}     prompt a user string or a messages list; chosen/rejected reply strings, or
                                         TRL's conversational form: each a list of messages, [{"role": "assistant",
                                         "content": ...}] (or the whole conversation, prompt included)
    {"chosen", "rejected"} as messages   TRL's "implicit prompt": two whole conversations; the shared part is the
                                         prompt, what follows it in each is that one's reply
    {"chosen", "rejected"} as strings    Anthropic HH-RLHF: each a whole dialogue
                                         "\\n\\nHuman: ...\\n\\nAssistant: ..."; the shared part becomes the prompt
                                         conversation, the final assistant turns the two replies (Bai et al. 2022,
                                         "Training a Helpful and Harmless Assistant")
    {"message_tree_id", "prompt": {...}} an OpenAssistant message tree: sibling assistant replies that people ranked
                                         (rank 0 is best) give every (better, worse) pair among them, as InstructGPT
                                         turns K ranked answers into K(K-1)/2 comparisons (Ouyang et al. 2022, §3.5)
Feedback format: {"prompt", "completion", "label": true|false}, prompt and completion strings or (TRL's
conversational "unpaired preference" form) message lists.

A malformed record raises DataError naming the file and line. A pair whose two replies are identical carries no
preference, and one whose preferred reply is empty teaches to say nothing: both are skipped, and counted in one
printed line per file (HH-RLHF has a few dozen of each). So is a thumbs-up for an empty completion.

    python -c "from nanotrain.pref_data import load_pairs; print(len(load_pairs('../shared/data/hh_rlhf')))"
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from nanotrain.data import read_jsonl
from nanotrain.errors import ConfigError, DataError

ROLES = ("system", "user", "assistant")


@dataclass
class Pair:
    messages: list[dict]  # the prompt conversation
    chosen: str  # the preferred assistant reply
    rejected: str  # the other one
    gold: tuple[float, float] | None = None  # the replies' true scores, when known (the built-in world's labels)


@dataclass
class Feedback:
    messages: list[dict]
    completion: str
    label: bool  # True: a good reply (thumbs up)


# ----- reading files

def jsonl_files(path) -> list[Path]:
    """Expand a file, a folder (its .jsonl and .jsonl.gz files, sorted) or a comma-separated list of either."""
    files: list[Path] = []
    for part in str(path).split(","):
        p = Path(part.strip())
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.endswith((".jsonl", ".jsonl.gz")))
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no .jsonl or .jsonl.gz files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def skipped(f, counts: dict) -> None:
    """Say what a file's loader left out (on the first process only, under torchrun)."""
    parts = [f"{n} {why}" for why, n in counts.items() if n]
    if parts and int(os.environ.get("RANK", 0)) == 0:
        print(f"{f}: skipped {', '.join(parts)}")


def load_pairs(path) -> list[Pair]:
    """Every usable preference pair in ``path`` (see the module docstring for the formats)."""
    pairs: list[Pair] = []
    for f in jsonl_files(path):
        same = empty = 0
        for lineno, rec in read_jsonl(f):
            where = f"{f}:{lineno}"
            if "message_tree_id" in rec or isinstance(rec.get("prompt"), dict):
                new = oasst_pairs(rec, where)
            elif "chosen" in rec and "rejected" in rec and "prompt" not in rec and isinstance(rec["chosen"], str):
                new = [hh_pair(rec, where)]
            elif "chosen" in rec and "rejected" in rec:
                new = [explicit_pair(rec, where)]
            else:
                raise DataError(f"{where}: not a preference record: expected {{prompt, chosen, rejected}}, an "
                                f"HH-RLHF {{chosen, rejected}} dialogue or an OASST message tree; got keys "
                                f"{sorted(rec)}")
            same += sum(p.chosen == p.rejected for p in new)
            empty += sum(p.chosen != p.rejected and not p.chosen.strip() for p in new)
            pairs += [p for p in new if p.chosen != p.rejected and p.chosen.strip()]
        skipped(f, {"pairs whose two replies are the same": same, "pairs whose preferred reply is empty": empty})
    return pairs


def load_feedback(path) -> list[Feedback]:
    """Binary feedback records {"prompt", "completion", "label"} (label true/false, or 1/0)."""
    out = []
    for f in jsonl_files(path):
        empty = 0
        for lineno, rec in read_jsonl(f, required=("prompt", "completion", "label")):
            where = f"{f}:{lineno}"
            label = rec["label"]
            if label not in (True, False) or isinstance(label, float):  # (1 == True in Python; 1.0 is refused)
                raise DataError(f"{where}: label must be true or false, got {label!r}")
            convo = conversation(as_messages(rec["prompt"], where), rec, "completion", where)
            if label and not convo[-1]["content"].strip():
                empty += 1
                continue
            out.append(Feedback(convo[:-1], convo[-1]["content"], bool(label)))
        skipped(f, {"thumbs-up for an empty completion": empty})
    return out


def pairs_as_feedback(pairs: list[Pair]) -> list[Feedback]:
    """Preference pairs as KTO's unpaired data: each pair's chosen reply a thumbs up and its rejected reply a thumbs
    down, as the KTO paper turns the paired datasets it trains on into its own (Ethayarajh et al. 2024)."""
    return [Feedback(p.messages, reply, label)
            for p in pairs for reply, label in ((p.chosen, True), (p.rejected, False))]


def text(rec: dict, key: str, where: str) -> str:
    if not isinstance(rec[key], str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(rec[key]).__name__}")
    return rec[key]


def as_messages(prompt, where: str, key: str = "prompt") -> list[dict]:
    """A prompt is a user string or a list of {"role", "content"} messages; anything else is a DataError."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise DataError(f"{where}: {key} must be a string or a non-empty list of messages")
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: {key} message {i} must be {{\"role\": one of {list(ROLES)}, "
                            f"\"content\": a string}}, got {str(m)[:80]}")
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


# ----- TRL's formats: replies as strings or as message lists, the prompt given or implicit


def conversation(prompt: list[dict], rec: dict, key: str, where: str) -> list[dict]:
    """The prompt followed by ``rec[key]``: a reply string, or a list of messages that either continues the prompt
    (TRL: [{"role": "assistant", ...}]) or repeats it first (some datasets store the whole conversation)."""
    if isinstance(rec[key], str):
        return prompt + [{"role": "assistant", "content": rec[key]}]
    if not isinstance(rec[key], list):
        raise DataError(f"{where}: field {key!r} must be a string or a list of messages, got "
                        f"{type(rec[key]).__name__}")
    msgs = as_messages(rec[key], where, key)
    convo = msgs if prompt and msgs[:len(prompt)] == prompt else prompt + msgs
    if convo[-1]["role"] != "assistant" or len(convo) < 2:
        raise DataError(f"{where}: {key} must end with the assistant's reply to a user message")
    return convo


def explicit_pair(rec: dict, where: str) -> Pair:
    """A pair from TRL's preference formats: the two conversations share the prompt and end with one assistant
    reply each."""
    prompt = as_messages(rec["prompt"], where) if "prompt" in rec else []
    chosen, rejected = conversation(prompt, rec, "chosen", where), conversation(prompt, rec, "rejected", where)
    if chosen == rejected:
        return Pair(chosen[:-1], chosen[-1]["content"], chosen[-1]["content"])  # no preference: load_pairs skips it
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if len(chosen) != shared + 1 or len(rejected) != shared + 1 or not shared:
        raise DataError(f"{where}: chosen and rejected must be the same conversation up to one final assistant "
                        f"reply each; they differ from message {shared} on, in {len(chosen) - shared} and "
                        f"{len(rejected) - shared} messages")
    return Pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], gold_scores(rec, where))


def gold_scores(rec: dict, where: str) -> tuple[float, float] | None:
    """The noise-free scores of both replies, where the labelling stage wrote them (gold_chosen, gold_rejected)."""
    if "gold_chosen" not in rec and "gold_rejected" not in rec:
        return None
    scores = rec.get("gold_chosen"), rec.get("gold_rejected")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores):
        raise DataError(f"{where}: gold_chosen and gold_rejected must both be numbers, not {scores[0]!r} and "
                        f"{scores[1]!r}")
    return float(scores[0]), float(scores[1])


# ----- HH-RLHF dialogues

HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
HH_LAST = "\n\nAssistant:"


def hh_pair(rec: dict, where: str) -> Pair:
    """One HH-RLHF record -> Pair. The prompt is the text both dialogues share up to the last "Assistant:" marker
    inside that shared part; what follows it in each dialogue is that dialogue's reply. (A few records have
    "Assistant:" inside a reply, or two Assistant turns in a row, so the marker is searched for only in the shared
    prefix rather than simply taken as the last one.)"""
    chosen, rejected = text(rec, "chosen", where), text(rec, "rejected", where)
    cut = chosen.rfind(HH_LAST)
    while cut >= 0 and not rejected.startswith(chosen[:cut + len(HH_LAST)]):  # not shared: look further back
        cut = chosen.rfind(HH_LAST, 0, cut)
    if not chosen.startswith("\n\nHuman:") or cut < 0:
        raise DataError(f"{where}: not an HH-RLHF dialogue: expected both texts to start with '\\n\\nHuman:' and to "
                        f"share the conversation up to a final '\\n\\nAssistant:' turn")
    return Pair(hh_messages(chosen[:cut]), chosen[cut + len(HH_LAST):].strip(),
                rejected[cut + len(HH_LAST):].strip())


def hh_messages(dialogue: str) -> list[dict]:
    """"\\n\\nHuman: a\\n\\nAssistant: b ..." -> messages; consecutive turns of one speaker are joined."""
    parts = HH_TURN.split(dialogue)  # ["", "Human", "a", "Assistant", "b", ...]
    msgs: list[dict] = []
    for speaker, body in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        if msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"] += "\n\n" + body.strip()
        else:
            msgs.append({"role": role, "content": body.strip()})
    return msgs


# ----- OpenAssistant message trees

def oasst_pairs(rec: dict, where: str) -> list[Pair]:
    """Pairs from one OASST tree: for every prompter message, its ranked, non-deleted, human-written assistant
    replies, all (better, worse) combinations. The conversation is the path from the root to that message."""
    root = rec.get("prompt")
    if not isinstance(root, dict) or not isinstance(root.get("text"), str) or root.get("role") != "prompter":
        raise DataError(f"{where}: OASST tree lacks a root 'prompt' message from the prompter")
    pairs: list[Pair] = []

    def usable(m) -> bool:
        return isinstance(m, dict) and isinstance(m.get("text"), str) and not m.get("deleted") \
            and not m.get("synthetic")

    def walk(msg: dict, history: list[dict]):
        role = "user" if msg["role"] == "prompter" else "assistant"
        convo = history + [{"role": role, "content": msg["text"]}]
        replies = [r for r in msg.get("replies") or [] if usable(r)]
        if role == "user":
            ranked = sorted((r for r in replies if isinstance(r.get("rank"), int)), key=lambda r: r["rank"])
            for i, better in enumerate(ranked):
                for worse in ranked[i + 1:]:
                    if better["rank"] < worse["rank"]:
                        pairs.append(Pair(convo, better["text"], worse["text"]))
        for r in replies:
            walk(r, convo)

    if usable(root):
        walk(root, [])
    return pairs


# ----- held-out split

def split_pairs(pairs: list, val_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Hold out ``val_fraction`` of the *prompts* (with all their pairs): OASST gives several pairs per prompt, and a
    model that saw the prompt in training would be judged on it otherwise."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction must be above 0 and below 1, not {val_fraction}")
    keys = sorted({repr(p.messages) for p in pairs})
    random.Random(seed).shuffle(keys)
    held = set(keys[:max(1, round(len(keys) * val_fraction))])
    train = [p for p in pairs if repr(p.messages) not in held]
    val = [p for p in pairs if repr(p.messages) in held]
    return train, val
