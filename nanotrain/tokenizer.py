"""Tokenizers and the chat template.

Two byte-level BPE vocabularies, both encoded by tiktoken:

- ``gpt2``: GPT-2's own BPE (tiktoken's ``r50k_base``), for real data and for GPT-2 weights.
- ``bpe``: a small BPE (a few thousand tokens) trained here by ``train_bpe`` with GPT-2's pre-tokenisation regex,
  except that a run of Chinese characters is a word of its own (``BPE_PATTERN``).
  On a CPU a 50k-row output layer dominates the cost of a small model, so the built-in world uses a small one.

Both get the same special tokens appended after the ordinary ones: end-of-text (documents are separated by it and a
conversation starts with it), a pad token that is *not* end-of-text (so the model is never taught to ignore the
token that makes it stop), and the chat markers. Ordinary text is always encoded with ``encode_ordinary``: a user
who types ``<|endoftext|>`` or ``<|user|>`` gets plain text tokens, never a control token.

The chat template (``render_chat``) lives here because only the tokenizer knows the markers: it returns token ids
and a loss mask that is 1 exactly on the assistant's tokens and its end-of-turn token.

    python -c "from nanotrain.tokenizer import Tokenizer; t = Tokenizer.gpt2(); print(t.encode('hello'))"
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict

import regex
import tiktoken

from nanotrain.errors import TokenizerError

# GPT-2's pre-tokenisation: split text into "words" (letters, numbers, punctuation runs, whitespace) that BPE never
# merges across. Same pattern as tiktoken's r50k_base.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The project's own BPE: the same, but letters of the Han script (Chinese characters) never join other letters in a
# word. Chinese puts no space between a name and the next word, so with GPT-2's regex "Vera今年28岁" starts with a
# word "Vera今年" and BPE learns a token for it: a question in Chinese about Vera would then never contain the token
# the English pretraining text taught Vera's facts under. Here it splits as Vera | 今年 | 28 | 岁, and the name is one
# token in both languages, the precondition for the cross-lingual transfer train_sft.py measures.
BPE_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?(?:(?!\p{Han})\p{L})+|\p{Han}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

EOT, PAD, SYSTEM, USER, AI, END = "<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|ai|>", "<|end|>"
SPECIALS = [EOT, PAD, SYSTEM, USER, AI, END]
ROLE_MARKER = {"system": SYSTEM, "user": USER, "assistant": AI}


def train_bpe(texts, vocab_size: int, pattern: str = BPE_PATTERN) -> list[bytes]:
    """Learn byte-level BPE merges (Sennrich et al. 2016; GPT-2's byte-level variant) from an iterable of strings.

    Returns the vocabulary as a list of byte strings; a token's rank is its index (0..255 are the single bytes,
    then one token per merge, in the order learned). Counting is over *distinct* words weighted by frequency, and
    pair counts are updated incrementally, so a merge costs time proportional to the words that contain the pair.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (the byte alphabet), got {vocab_size}")
    pat = regex.compile(pattern)
    word_freq: Counter[str] = Counter()
    for text in texts:
        word_freq.update(pat.findall(text))
    words = [list(w.encode("utf-8")) for w in word_freq]
    freqs = list(word_freq.values())
    vocab = [bytes([i]) for i in range(256)]

    pair_count: Counter[tuple[int, int]] = Counter()
    pair_words: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pair_count[pair] += freqs[wi]
            pair_words[pair].add(wi)
    # Max-heap of (-count, pair) with lazy deletion: stale entries are skipped when popped. Ties go to the smallest
    # pair ids, which keeps training deterministic.
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg or -neg <= 0:
            continue  # stale entry
        new_id = len(vocab)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        touched = set()
        for wi in pair_words.pop(pair):
            w, f = words[wi], freqs[wi]
            for p in zip(w, w[1:]):  # remove the old word's pairs ...
                pair_count[p] -= f
                touched.add(p)
            merged, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(w[i])
                    i += 1
            words[wi] = merged
            for p in zip(merged, merged[1:]):  # ... and add the new word's
                pair_count[p] += f
                pair_words[p].add(wi)
                touched.add(p)
        pair_count.pop(pair, None)
        for p in touched:
            if p != pair and pair_count.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_count[p], p))
    return vocab


class Tokenizer:
    """A tiktoken ``Encoding`` plus the project's special tokens and chat template.

    ``to_dict`` / ``from_dict`` serialise it into plain strings and ints, so it travels inside every checkpoint
    (loadable with ``torch.load(weights_only=True)``) and beside the tokenized data.
    """

    def __init__(self, name: str, mergeable_ranks: dict[bytes, int], pattern: str = BPE_PATTERN, eot_id=None):
        self.name = name
        n = len(mergeable_ranks)
        # GPT-2's end-of-text already has id 50256 == n; keep it there so GPT-2 weights line up.
        base = n if eot_id is None else eot_id
        self.special_ids = {s: base + i for i, s in enumerate(SPECIALS)}
        self.enc = tiktoken.Encoding(name=f"nanotrain-{name}", pat_str=pattern, mergeable_ranks=mergeable_ranks,
                                     special_tokens=self.special_ids)
        self.pattern = pattern
        self.ranks = mergeable_ranks  # token bytes -> id, tiktoken's form of a BPE (export.py writes it for HF)
        self.n_vocab = max(self.special_ids.values()) + 1
        self.eot, self.pad = self.special_ids[EOT], self.special_ids[PAD]
        self.user, self.ai, self.system, self.end = (self.special_ids[s] for s in (USER, AI, SYSTEM, END))

    # ----- construction and serialisation
    @classmethod
    def gpt2(cls) -> "Tokenizer":
        try:
            base = tiktoken.get_encoding("r50k_base")
        except Exception as e:  # network error, missing cache, ...
            raise TokenizerError(
                "cannot load GPT-2's BPE (tiktoken 'r50k_base') offline: point TIKTOKEN_CACHE_DIR at a folder that "
                "holds tiktoken's cached vocabulary (for example ../shared/tiktoken), or run once with internet "
                f"access so tiktoken can download it ({type(e).__name__}: {e})") from None
        return cls("gpt2", base._mergeable_ranks, base._pat_str, eot_id=base.eot_token)

    @classmethod
    def train(cls, texts, vocab_size: int = 4096) -> "Tokenizer":
        """Train a small BPE whose total size, special tokens included, is ``vocab_size``."""
        vocab = train_bpe(texts, vocab_size - len(SPECIALS))
        return cls(f"bpe{vocab_size}", {b: i for i, b in enumerate(vocab)})

    def to_dict(self) -> dict:
        if self.name == "gpt2":
            return {"name": "gpt2", "special_tokens": dict(self.special_ids)}
        tokens = [b.hex() for b, _ in sorted(self.ranks.items(), key=lambda kv: kv[1])]
        return {"name": self.name, "pattern": self.pattern, "tokens_hex": tokens,
                "special_tokens": dict(self.special_ids)}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        if d["name"] == "gpt2":
            tok = cls.gpt2()
        else:
            tok = cls(d["name"], {bytes.fromhex(h): i for i, h in enumerate(d["tokens_hex"])}, d["pattern"])
        if tok.special_ids != d["special_tokens"]:
            raise ValueError(f"tokenizer {d['name']!r}: special tokens {d['special_tokens']} differ from this "
                             f"version's {tok.special_ids}")
        return tok

    # ----- text <-> ids
    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token strings in ``text`` become ordinary text tokens."""
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids, skip_special: bool = True) -> str:
        """Text of ``ids``; ids past the vocabulary (the rows a model pads its embedding to, see gpt.padded_vocab,
        which an untrained or tiny model can still sample) have no text and are dropped."""
        ids = [int(i) for i in ids if int(i) < self.n_vocab]
        if skip_special:
            special = set(self.special_ids.values())
            ids = [i for i in ids if i not in special]
        return self.enc.decode(ids, errors="replace")

    # ----- chat template
    # Every message body starts with one space, as in LLaMA 2's "[INST] question [/INST] answer", so the word that
    # opens a reply is the token it is in running text: " Aaron" in "Where does Aaron live?", in pretraining's
    # sentences and at the start of the answer "Aaron lives in Ashford." Without the space a reply's first word is a
    # token of its own ("Aaron", which pretraining shows only at a document's start), and SFT learns to produce it
    # name by name for the people its data mentions, never by copying the name asked about (README, stage 2).
    def encode_message(self, text: str) -> list[int]:
        """Ids of one message body in the chat template (a reply scored or trained on alone, too)."""
        return self.encode(" " + text)

    def decode_message(self, ids) -> str:
        """Text of a message body's ids, without the space the template puts before it."""
        text = self.decode(ids)
        return text[1:] if text.startswith(" ") else text

    def render_chat(self, messages: list[dict], max_len: int | None = None):
        """Render a conversation to ``(ids, mask)``.

        Layout: ``<|endoftext|> [<|system|> text <|end|>] (<|user|> text <|end|> <|ai|> text <|end|>)*``, each
        text encoded with its leading space (``encode_message``).
        ``mask[i]`` is 1 where token i is a token the model must learn to produce: the assistant's text and its
        ``<|end|>`` (so it learns to stop). Markers and user text are context only. If ``max_len`` is given, whole
        turns are dropped from the end until it fits; returns ``None`` if not even the first reply fits.
        """
        ids, mask = [self.eot], [0]
        turn_ends = []  # lengths after each complete assistant turn: the only places it is safe to cut
        for m in messages:
            marker = ROLE_MARKER[m["role"]]
            body = self.encode_message(m["content"])
            learn = 1 if m["role"] == "assistant" else 0
            ids += [self.special_ids[marker]] + body + [self.end]
            mask += [0] + [learn] * len(body) + [learn]
            if m["role"] == "assistant":
                turn_ends.append(len(ids))
        if max_len is not None and len(ids) > max_len:
            fits = [n for n in turn_ends if n <= max_len]
            if not fits:
                return None
            ids, mask = ids[:fits[-1]], mask[:fits[-1]]
        return ids, mask

    def render_prompt(self, messages: list[dict]) -> list[int]:
        """Render the conversation so far and open the assistant's turn, ready for generation."""
        ids, _ = self.render_chat(messages)
        return ids + [self.ai]
