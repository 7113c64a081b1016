"""eval.py: HellaSwag completion scoring and sliding-window perplexity, against naive per-sequence computations."""
import math
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from conftest import script
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.tokenizer import Tokenizer

ev = script("eval.py")
TEXT = "The cat sat on the mat. The dog ate the bone. " * 20


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT, "is using wrap to wrap a pair of skis. ripping level tiles off a roof."], 400)


def model_for(tok, block=64, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.n_vocab, block_size=block, n_layer=1, n_head=2, n_embd=32)).eval()


def test_hellaswag_file_has_all_validation_items(shared_data):
    items = ev["read_hellaswag"](shared_data / "hellaswag" / "hellaswag_val_full.txt.bz2")
    assert len(items) == 10042 and items[0]["label"] == 3 and len(items[0]["endings"]) == 4
    assert items[0]["context"] == "A man is sitting on a roof. he"


def test_batched_item_score_matches_scoring_each_ending_alone(tok):
    m = model_for(tok)
    item = {"context": "A man is on a roof. he", "label": 1,
            "endings": ["is using wrap.", "is ripping level tiles off a roof.", "sat.", "ate the bone."]}
    totals, means = [], []
    ctx = tok.encode(item["context"])
    for e in item["endings"]:
        ids = ctx + tok.encode(" " + e)
        x = torch.tensor(ids)[None]
        logp = m(x)[0][0].log_softmax(-1)
        lp = [logp[j - 1, ids[j]].item() for j in range(len(ctx), len(ids))]
        totals.append(-sum(lp))
        means.append(-sum(lp) / len(lp))
    p_norm, p_raw = ev["score_item"](m, tok, item, "cpu")
    assert p_norm == min(range(4), key=means.__getitem__)
    assert p_raw == min(range(4), key=totals.__getitem__)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tok):
    m = model_for(tok, block=16)
    with torch.no_grad():
        m.transformer.wte.weight.zero_()  # tied output layer -> all logits 0 -> uniform prediction
    r = ev["perplexity"](m, tok, TEXT, "cpu", nullcontext)
    assert math.isclose(r["wikitext_ppl"], tok.n_vocab, rel_tol=1e-4)
    assert r["wikitext_tokens"] == len(tok.encode(TEXT)) - 1  # every token after the first scored exactly once


def test_perplexity_within_one_window_equals_one_forward_pass(tok):
    m = model_for(tok, block=256)
    text = TEXT[:300]
    ids = tok.encode(text)
    assert len(ids) < 256
    x = torch.tensor(ids)[None]
    with torch.no_grad():
        ce = F.cross_entropy(m(x)[0][0, :-1], x[0, 1:]).item()
    r = ev["perplexity"](m, tok, text, "cpu", nullcontext)
    assert math.isclose(r["wikitext_ppl"], math.exp(ce), rel_tol=1e-4)
