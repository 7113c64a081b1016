"""Tokenizers: the BPE trainer against a naive reference, tiktoken encoding, special tokens, serialisation."""
from collections import Counter

import pytest
import regex

from nanotrain.errors import TokenizerError
from nanotrain.tokenizer import BPE_PATTERN, SPECIALS, Tokenizer, train_bpe

TEXT = ("the cat sat on the mat. the cat ate the rat! a rat and a cat; that hat is the cat's hat. "
        "Lena's red bicycle is in Oakville. 蓝色的自行车 Lena的自行车是红色的。") * 3


def naive_bpe(text, vocab_size):
    """Textbook BPE: recount every adjacent pair in every word occurrence, merge the most frequent (ties: smallest
    pair), repeat."""
    words = [list(w.encode()) for w in regex.findall(BPE_PATTERN, text)]
    vocab = [bytes([i]) for i in range(256)]
    while len(vocab) < vocab_size:
        counts = Counter(p for w in words for p in zip(w, w[1:]))
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        new = len(vocab)
        vocab.append(vocab[best[0]] + vocab[best[1]])
        for j, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[j] = out
    return vocab


def test_bpe_trainer_learns_the_same_merges_as_the_naive_reference():
    assert train_bpe([TEXT], 330) == naive_bpe(TEXT, 330)


def test_a_name_is_the_same_token_beside_chinese_characters():
    """Chinese writes no space after a name: the name must still be its own word, the token English text uses."""
    text = "Lena的自行车是红色的。Lena最喜欢吃面包。Lena is a baker. 谁是Lena最好的朋友？" * 20
    tok = Tokenizer.train([text], 300)  # with GPT-2's regex, "Lena最喜欢" starts with a token of its own
    lena = tok.encode("Lena")
    assert len(lena) == 1
    for chinese in ("Lena的自行车", "Lena最喜欢", "谁是Lena最好的朋友？"):
        assert lena[0] in tok.encode(chinese), chinese
    # tiktoken (Rust regex) splits text into the same words as the trainer's Python regex did
    mixed = text + " naïve café 2026年 Lena's"
    assert tok.encode(mixed) == [i for w in regex.findall(BPE_PATTERN, mixed) for i in tok.encode(w)]
    assert tok.decode(tok.encode(text)) == text


def test_trained_tokenizer_roundtrips_and_compresses():
    tok = Tokenizer.train([TEXT], 256 + 60 + len(SPECIALS))
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert len(ids) < len(TEXT.encode()) / 2
    assert tok.n_vocab == 256 + 60 + len(SPECIALS)
    # ids of the embedding's padding rows (a model may sample them) have no text: dropped, not a KeyError
    assert tok.decode(ids + [tok.n_vocab, tok.n_vocab + 5]) == TEXT


def test_special_strings_in_user_text_stay_plain_text():
    tok = Tokenizer.train([TEXT], 300)
    text = "hi <|endoftext|> <|user|> <|ai|> <|end|> <|pad|>"
    ids = tok.encode(text)
    assert not set(ids) & set(tok.special_ids.values())
    assert tok.decode(ids) == text


def test_special_tokens_follow_the_ordinary_ones_and_pad_is_not_eot():
    tok = Tokenizer.train([TEXT], 300)
    assert sorted(tok.special_ids.values()) == list(range(300 - len(SPECIALS), 300))
    assert tok.pad != tok.eot


def test_serialisation_roundtrip():
    tok = Tokenizer.train([TEXT], 300)
    tok2 = Tokenizer.from_dict(tok.to_dict())
    assert tok2.encode(TEXT) == tok.encode(TEXT) and tok2.special_ids == tok.special_ids


def test_gpt2_tokenizer_keeps_gpt2_ids(gpt2):
    tok = gpt2
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's published ids
    assert tok.eot == 50256 and tok.pad == 50257 and tok.n_vocab == 50256 + len(SPECIALS)


def test_gpt2_vocab_that_cannot_load_offline_says_how_to_provide_it(monkeypatch, tmp_path):
    import tiktoken
    import tiktoken.registry

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache ...
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})

    def no_network(*a, **k):  # ... and no network
        raise ConnectionError("network unreachable")

    monkeypatch.setattr("tiktoken.load.read_file", no_network)
    with pytest.raises(TokenizerError, match="TIKTOKEN_CACHE_DIR"):
        Tokenizer.gpt2()
    del tiktoken
