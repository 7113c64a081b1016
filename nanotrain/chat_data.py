"""Instruction data for supervised fine-tuning: read any common format into conversations, then batch them.

Every loader returns a list of conversations, each a list of ``{"role", "content"}`` messages that passed
``validate`` (an optional system message first, then user/assistant strictly alternating, starting with the user and
ending with the assistant, no empty content). A malformed record raises ``DataError("file:line: ...")``.

    format     one record                                               file
    messages   {"messages": [{"role": "user", "content": ...}, ...]}   data/tinyworld/sft_train.jsonl
    alpaca     {"instruction", "input", "output"}                       shared/data/alpaca_sample (JSON array)
    lima       alpaca + "history": [[user, assistant], ...] (turns before the instruction)   shared/data/lima
    dolly      {"instruction", "context", "response"}                   shared/data/dolly_sample/dolly_151.jsonl
    oasst      one message tree per line; we keep the best-ranked path  shared/data/oasst_trees/en_100_tree.jsonl
    sharegpt   {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}   ShareGPT, and its many
               derivatives (a trailing unanswered human turn is dropped)
    prompt_completion   TRL's {"prompt", "completion"}: strings (one user turn, one reply) or message lists

``read_prompts`` reads what PPO and online DPO answer: {"prompt", "harmful"} records, a prompt a string or a
conversation ending with the user's turn.

Files are JSONL (optionally .gz) or one JSON array (``.json``); the format is detected from the first record's keys
unless given.

    convs = load_conversations("data/tinyworld/sft_train.jsonl")
    examples, skipped = encode_conversations(convs, tok, max_len=model.config.block_size + 1)
    batches = SFTBatches(examples, batch_size=16, pad_id=tok.pad, pack_rows=model.config.block_size)
    x, y, weight = batches.batch(step, micro)   # y = -1 where no loss is taken (prompt, markers, padding)

Batches are built two ways. **Padding**: each row is one conversation, right-padded to the longest in the batch
(right padding needs no attention mask in a causal model: pads come after every real token). **Packing**
(``pack_rows=T``): conversations are laid end to end into rows of exactly T tokens, so little compute is spent on
pads. Each conversation keeps its own loss mask, and each starts with ``<|endoftext|>``, the same document separator
the model saw in pretraining; tokens may attend across that boundary (as in pretraining), which is the usual price of
packing without a block-diagonal mask.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from nanotrain.data import decode, open_bytes, read_jsonl
from nanotrain.errors import DataError
from nanotrain.pref_data import as_messages, conversation, jsonl_files, skipped

FORMATS = ("messages", "alpaca", "lima", "dolly", "oasst", "sharegpt", "prompt_completion")
ROLES = ("system", "user", "assistant")


# ----------------------------------------------------------------------------------------------------------------
# Validation


def validate(messages, where: str, need_reply: bool = True) -> list[dict]:
    """Check one conversation; return it as plain ``{"role", "content"}`` dicts or raise DataError at ``where``."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: a conversation must be a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: message {i} must be an object with 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise DataError(f"{where}: message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{where}: message {i} ({role}) has empty or non-text content")
        out.append({"role": role, "content": content})
    turns = out[1:] if out[0]["role"] == "system" else out
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise DataError(f"{where}: turn {i} is {m['role']!r} but {expected!r} was expected (a conversation is an "
                            f"optional system message, then user and assistant turns alternating, user first)")
    if need_reply and (not turns or turns[-1]["role"] != "assistant"):
        raise DataError(f"{where}: the conversation must end with an assistant reply (nothing to learn otherwise)")
    return out


def read_prompts(path) -> tuple[list, list | None]:
    """Prompts (and their "harmful" labels, None unless every record has one) from a JSONL of {"prompt", ...}: what
    PPO and online DPO sample answers to. A prompt is a string or a conversation ending with the user's turn (one
    that ends otherwise is skipped and counted: nothing is left to answer). ``path``: a file, a folder or
    comma-separated files (pref_data.jsonl_files), read in that order."""
    prompts, harmful = [], []
    for f in jsonl_files(path):
        answered = 0
        for lineno, rec in read_jsonl(f, required=("prompt",)):
            where, prompt, label = f"{f}:{lineno}", rec["prompt"], rec.get("harmful")
            if isinstance(prompt, list):  # checked as a preference pair's prompt is (real dialogues hold empty turns)
                prompt = as_messages(prompt, where)
                if prompt[-1]["role"] != "user":
                    answered += 1
                    continue
            elif not isinstance(prompt, str) or not prompt.strip():
                raise DataError(f"{where}: 'prompt' must be a non-empty string or a list of messages, not {prompt!r}")
            if label not in (None, True, False):  # 1 and 0 too, as feedback labels are read
                raise DataError(f"{where}: 'harmful' must be true or false, not {label!r}")
            prompts.append(prompt)
            harmful.append(None if label is None else bool(label))
        skipped(f, {"prompt conversations that end with the assistant's turn": answered})
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts, (harmful if all(h is not None for h in harmful) else None)


# ----------------------------------------------------------------------------------------------------------------
# One record -> one conversation (None: skip it, e.g. an OASST tree whose root is synthetic)


def _text(rec, key, where, optional=False) -> str:
    v = rec.get(key, "" if optional else None)
    if v is None or not isinstance(v, str):
        raise DataError(f"{where}: field {key!r} must be a string")
    return v.strip()


def from_messages(rec: dict, where: str):
    if "messages" not in rec:
        raise DataError(f"{where}: record lacks field 'messages'")
    return rec["messages"]


def from_alpaca(rec: dict, where: str):
    """Alpaca/LIMA: the instruction, with the input (if any) after a blank line, is the user's turn. LIMA's
    ``history`` holds the earlier [user, assistant] turns of a multi-turn conversation."""
    instruction, extra = _text(rec, "instruction", where), _text(rec, "input", where, optional=True)
    msgs = []
    for pair in rec.get("history") or []:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise DataError(f"{where}: 'history' must be a list of [user, assistant] pairs")
        msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    if rec.get("system"):
        msgs.insert(0, {"role": "system", "content": rec["system"]})
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": _text(rec, "output", where)}]


def from_dolly(rec: dict, where: str):
    """Dolly: the context (a passage for closed QA, summarisation, ...) follows the instruction."""
    instruction, context = _text(rec, "instruction", where), _text(rec, "context", where, optional=True)
    user = f"{instruction}\n\n{context}" if context else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": _text(rec, "response", where)}]


def from_oasst(rec: dict, where: str):
    """OpenAssistant message tree: start at the prompt and at every step follow the best-ranked reply (human rank 0
    is best; unranked replies come after ranked ones). Synthetic (model-written) and deleted messages are skipped,
    so a path is human-written end to end. The path is cut after its last assistant message."""
    node = rec.get("prompt")
    if not isinstance(node, dict) or "text" not in node or "role" not in node:
        raise DataError(f"{where}: not an OASST message tree (no 'prompt' message with 'text' and 'role')")
    if node.get("synthetic") or node.get("deleted"):
        return None
    role_of = {"prompter": "user", "assistant": "assistant"}
    path = []
    while node is not None:
        if node["role"] not in role_of:
            raise DataError(f"{where}: unknown OASST role {node['role']!r}")
        path.append({"role": role_of[node["role"]], "content": node["text"]})
        replies = [r for r in node.get("replies") or [] if not r.get("synthetic") and not r.get("deleted")]
        ranked = sorted(replies, key=lambda r: (r.get("rank") is None, r.get("rank") or 0))
        node = ranked[0] if ranked else None
    while path and path[-1]["role"] != "assistant":
        path.pop()
    return path or None


SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def from_sharegpt(rec: dict, where: str):
    """ShareGPT: the "from" of each message names the speaker. Dumps of real chats often end with a question the
    model never answered; that turn has nothing to learn from, so it is dropped."""
    turns = rec.get("conversations")
    if not isinstance(turns, list):
        raise DataError(f"{where}: field 'conversations' must be a list of {{\"from\", \"value\"}} messages")
    msgs = []
    for i, m in enumerate(turns):
        if not isinstance(m, dict) or m.get("from") not in SHAREGPT_ROLES or "value" not in m:
            raise DataError(f"{where}: conversations[{i}] must be {{\"from\": one of {', '.join(SHAREGPT_ROLES)}, "
                            f"\"value\": the text}}, got {str(m)[:80]}")
        msgs.append({"role": SHAREGPT_ROLES[m["from"]], "content": m["value"]})
    while msgs and msgs[-1]["role"] == "user":
        msgs.pop()
    return msgs


def from_prompt_completion(rec: dict, where: str):
    """TRL's prompt-completion type: the prompt (a user string or messages) and its completion (a reply string, or
    the assistant's message(s)), read as pref_data reads a feedback record's."""
    return conversation(as_messages(rec["prompt"], where), rec, "completion", where)


CONVERTERS = {"messages": from_messages, "alpaca": from_alpaca, "lima": from_alpaca, "dolly": from_dolly,
              "oasst": from_oasst, "sharegpt": from_sharegpt, "prompt_completion": from_prompt_completion}


def detect_format(rec: dict, where: str) -> str:
    keys = set(rec) if isinstance(rec, dict) else set()
    if "messages" in keys:
        return "messages"
    if "message_tree_id" in keys or ("prompt" in keys and isinstance(rec.get("prompt"), dict)):
        return "oasst"
    if "conversations" in keys:
        return "sharegpt"
    if {"prompt", "completion"} <= keys and "label" not in keys:  # (with a label it is feedback for KTO, not SFT)
        return "prompt_completion"
    if {"instruction", "output"} <= keys:
        return "lima" if "history" in keys else "alpaca"
    if {"instruction", "response"} <= keys:
        return "dolly"
    raise DataError(f"{where}: cannot tell the data format from the fields {sorted(keys)}; expected one of "
                    f"{', '.join(FORMATS)} (see nanotrain/chat_data.py), or pass --format")


# ----------------------------------------------------------------------------------------------------------------
# Files


def read_json_array(path):
    """Yield (line_number, record) for each element of a file holding one JSON array, so that errors can name the
    line an element starts on just as they do for JSONL."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with open_bytes(path) as f:
        text = decode(f.read(), path)
    dec = json.JSONDecoder()
    seen = [0, 1]  # (position, its line): counting newlines incrementally keeps this linear in the file size

    def line_at(pos):
        seen[1] += text.count("\n", seen[0], pos)
        seen[0] = pos
        return seen[1]

    pos = len(text) - len(text.lstrip())
    if not text[pos:pos + 1] == "[":
        raise DataError(f"{path}:{line_at(pos)}: expected a JSON array of records (or use a .jsonl file)")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise DataError(f"{path}:{line_at(pos)}: the JSON array is not closed")
        if text[pos] == "]":
            return
        try:
            rec, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{line_at(pos)}: expected a JSON object, got {type(rec).__name__}")
        yield line_at(pos), rec
        pos = end


def read_records(path):
    """(line, record) pairs from a JSONL(.gz) file or a JSON-array file."""
    name = Path(path).name.removesuffix(".gz")
    return read_json_array(path) if name.endswith(".json") else read_jsonl(path)


def load_conversations(path, fmt: str = "auto", limit: int | None = None) -> list[list[dict]]:
    """Every conversation in ``path`` (at most ``limit``), validated. ``fmt`` is one of FORMATS or "auto"."""
    if fmt != "auto" and fmt not in CONVERTERS:
        raise DataError(f"unknown data format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    convs = []
    for lineno, rec in read_records(path):
        where = f"{path}:{lineno}"
        if fmt == "auto":
            fmt = detect_format(rec, where)
        conv = CONVERTERS[fmt](rec, where)
        if conv is None:
            continue
        convs.append(validate(conv, where))
        if limit is not None and len(convs) >= limit:
            break
    if not convs:
        raise DataError(f"{path}: no conversations found")
    return convs


def prompts_and_replies(convs) -> tuple[list[list[dict]], list[str]]:
    """Split each conversation before its last assistant reply: (the messages to answer, the reference reply)."""
    return [c[:-1] for c in convs], [c[-1]["content"] for c in convs]


# ----------------------------------------------------------------------------------------------------------------
# Tokens and batches


def encode_conversations(convs, tok, max_len: int) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Render each conversation with the chat template, keeping at most ``max_len`` tokens (whole turns are dropped
    from the end). Returns (examples, number skipped because not even the first reply fits)."""
    examples, skipped = [], 0
    for c in convs:
        r = tok.render_chat(c, max_len=max_len)
        if r is None:
            skipped += 1
        else:
            examples.append(r)
    return examples, skipped


def to_inputs_targets(ids: list[int], mask: list[int]) -> tuple[list[int], list[int]]:
    """Next-token pairs: input token t predicts token t+1; the target is -1 (no loss) unless the mask marks token
    t+1 as one the assistant must produce."""
    return ids[:-1], [t if m else -1 for t, m in zip(ids[1:], mask[1:])]


def pack(examples, row_len: int, pad_id: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lay shuffled examples end to end into rows of ``row_len`` next-token pairs (greedy: an example that does not
    fit in the current row starts the next one; the rest of the row is padding with no loss). An example is never
    split, so each keeps its whole loss mask. Returns (x, y) int64 arrays of shape (rows, row_len)."""
    order = np.random.default_rng([seed, 7]).permutation(len(examples))
    rows_x, rows_y, cur_x, cur_y = [], [], [], []
    for i in order:
        ids, mask = examples[i]
        x, y = to_inputs_targets(ids, mask)
        if len(x) > row_len:
            raise ValueError(f"example of {len(x)} tokens is longer than a row of {row_len}")
        if len(cur_x) + len(x) > row_len:
            rows_x.append(cur_x)
            rows_y.append(cur_y)
            cur_x, cur_y = [], []
        cur_x += x
        cur_y += y
    if cur_x:
        rows_x.append(cur_x)
        rows_y.append(cur_y)
    X = np.full((len(rows_x), row_len), pad_id, dtype=np.int64)
    Y = np.full((len(rows_x), row_len), -1, dtype=np.int64)
    for r, (x, y) in enumerate(zip(rows_x, rows_y)):
        X[r, :len(x)], Y[r, :len(y)] = x, y
    return X, Y


def pad_right(pairs, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) lists of equal length per example -> (B, T) tensors padded on the right (targets -1 there)."""
    T = max(len(x) for x, _ in pairs)
    X = torch.full((len(pairs), T), pad_id, dtype=torch.long)
    Y = torch.full((len(pairs), T), -1, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        X[i, :len(x)] = torch.tensor(x)
        Y[i, :len(y)] = torch.tensor(y)
    return X, Y


class SFTBatches:
    """Training batches, a pure function of (seed, step, micro) so a resumed run sees the same data, and each DDP
    rank takes its own slice of the same global batch (the TokenBin pattern in nanotrain/data.py).

    Rows (packed rows, or conversations when padding) are visited in epochs: each epoch is a fresh seeded
    permutation, so every conversation is seen once per epoch (sampling with replacement would skip ~1/3 of a small
    set in each epoch's worth of steps).

    ``batch`` returns ``(x, y, weight)``. The loss the whole step should minimise is the mean over *all* target
    tokens of the global batch; a micro-batch's mean over its own tokens must be multiplied by ``weight`` = (its
    target tokens / the global batch's) * (micro-batches per step * processes), because the trainer divides by the
    number of micro-batches and DDP averages over processes. Without it, rows with few target tokens would count as
    much as rows with many, and the result would depend on how the batch is split (see Hugging Face's 2024
    gradient-accumulation fix)."""

    def __init__(self, examples, batch_size: int, pad_id: int, pack_rows: int | None = None, device="cpu",
                 seed: int = 0, rank: int = 0, world: int = 1, grad_accum: int = 1):
        if not examples:
            raise DataError("no training examples fit the context length")
        self.batch_size, self.pad_id, self.device = batch_size, pad_id, device
        self.seed, self.rank, self.world, self.grad_accum = seed, rank, world, grad_accum
        self.packed = pack_rows is not None
        if self.packed:
            self.X, self.Y = pack(examples, pack_rows, pad_id, seed)
            self.targets = (self.Y != -1).sum(1)
            self.tokens_per_row = self.X.shape[1]
        else:
            self.pairs = [to_inputs_targets(ids, mask) for ids, mask in examples]
            self.targets = np.array([sum(t != -1 for t in y) for _, y in self.pairs])
            self.tokens_per_row = sum(len(x) for x, _ in self.pairs) / len(self.pairs)
        self.n = len(self.targets)

    def _rows(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        if self.packed:
            x, y = torch.from_numpy(self.X[idx]), torch.from_numpy(self.Y[idx])
        else:
            x, y = pad_right([self.pairs[i] for i in idx], self.pad_id)
        return x.to(self.device), y.to(self.device)

    def global_rows(self, step: int) -> np.ndarray:
        """Row indices of the whole global batch of optimizer step ``step`` (all processes, all micro-batches)."""
        size = self.batch_size * self.grad_accum * self.world
        pos = np.arange(step * size, (step + 1) * size)
        epochs = pos // self.n
        rows = np.empty(size, dtype=np.int64)
        for e in np.unique(epochs):
            perm = np.random.default_rng([self.seed, int(e)]).permutation(self.n)
            rows[epochs == e] = perm[pos[epochs == e] % self.n]
        return rows

    def batch(self, step: int, micro: int = 0):
        """This rank's ``micro``-th micro-batch of optimizer step ``step``: (x, y, weight), see the class doc."""
        rows = self.global_rows(step)
        per_rank = self.batch_size * self.grad_accum
        first = self.rank * per_rank + micro * self.batch_size
        mine = rows[first:first + self.batch_size]
        weight = self.targets[mine].sum() / self.targets[rows].sum() * self.grad_accum * self.world
        return (*self._rows(mine), float(weight))

    def eval_batches(self):
        """Every row once, in order (the same at each evaluation): (x, y) pairs."""
        for i in range(0, self.n, self.batch_size):
            yield self._rows(np.arange(i, min(i + self.batch_size, self.n)))


def mean_loss(model, batches) -> float:
    """Token-weighted mean cross-entropy over every target token of ``batches`` (``model(x, y)`` averages within a
    batch; weighting by target count makes the figure independent of how the rows were batched)."""
    total, count = 0.0, 0
    for x, y in batches:
        n = int((y != -1).sum())
        if n:
            total += model(x, y)[1].item() * n
            count += n
    return total / max(1, count)
