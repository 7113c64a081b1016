"""DPO, IPO, conservative DPO and KTO against their closed forms on hand-computed inputs, and DPO on a tiny model:
ln 2 at the start (policy == reference), and a gradient step that raises chosen relative to rejected."""
import math

import numpy as np
import pytest
import torch

from nanotrain.data import batch_indices
from nanotrain.dpo import (collate, kto_lambdas, kto_loss, preference_loss, reference_logprobs,
                           render_response, sequence_logprobs)
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.tokenizer import Tokenizer


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_dpo_and_cdpo_and_ipo_closed_forms():
    pc, pr, rc, rr = t(-1.0, -4.0), t(-2.0, -3.0), t(-1.5, -3.0), t(-1.5, -3.5)
    h = [(-1.0 + 1.5) - (-2.0 + 1.5), (-4.0 + 3.0) - (-3.0 + 3.5)]  # [1.0, -1.5]
    beta = 0.5
    loss, info = preference_loss(pc, pr, rc, rr, beta=beta)
    assert math.isclose(float(loss), sum(-log_sigmoid(beta * x) for x in h) / 2, rel_tol=1e-12)
    assert info["reward_accuracy"] == 0.5
    assert math.isclose(info["reward_chosen"], beta * ((-1.0 + 1.5) + (-4.0 + 3.0)) / 2)
    assert math.isclose(info["reward_margin"], beta * sum(h) / 2)
    eps = 0.1
    loss, _ = preference_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)
    want = sum(-(1 - eps) * log_sigmoid(beta * x) - eps * log_sigmoid(-beta * x) for x in h) / 2
    assert math.isclose(float(loss), want, rel_tol=1e-12)
    tau = 0.25  # IPO: (h - 1/(2 tau))^2 = (h - 2)^2
    loss, _ = preference_loss(pc, pr, rc, rr, beta=tau, loss_type="ipo")
    assert math.isclose(float(loss), ((1.0 - 2) ** 2 + (-1.5 - 2) ** 2) / 2, rel_tol=1e-12)
    with pytest.raises(ValueError):
        preference_loss(pc, pr, rc, rr, loss_type="xpo")


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_kto_closed_form_with_batch_kl_reference_point():
    pi, ref = t(-1.0, -3.0, -2.0), t(-1.5, -2.0, -2.0)  # implicit rewards 0.5, -1.0, 0.0
    good = torch.tensor([True, False, True])
    pi_kl, ref_kl = t(-2.0, -2.2, -1.0), t(-2.3, -2.1, -1.1)  # mismatched-pair ratios 0.3, -0.1, 0.1 -> z0 = 0.1
    beta, ld, lu = 2.0, 1.0, 1.5
    loss, info = kto_loss(pi, ref, good, pi_kl, ref_kl, beta=beta, lambda_d=ld, lambda_u=lu)
    z0 = 0.1
    want = [ld - ld * sigmoid(beta * (0.5 - z0)), lu - lu * sigmoid(beta * (z0 + 1.0)),
            ld - ld * sigmoid(beta * (0.0 - z0))]
    assert math.isclose(float(loss), sum(want) / 3, rel_tol=1e-9)
    assert math.isclose(info["kl_ref_point"], z0, rel_tol=1e-9)
    # a negative KL estimate is clamped to 0
    loss, info = kto_loss(pi, ref, good, ref_kl, pi_kl, beta=beta, lambda_d=ld, lambda_u=lu)
    assert info["kl_ref_point"] == 0.0
    want = [ld - ld * sigmoid(beta * 0.5), lu - lu * sigmoid(beta * 1.0), ld - ld * sigmoid(0.0)]
    assert math.isclose(float(loss), sum(want) / 3, rel_tol=1e-9)
    # the reference point carries no gradient
    p, pk = pi.clone().requires_grad_(), pi_kl.clone().requires_grad_()
    kto_loss(p, ref, good, pk, ref_kl, beta=beta)[0].backward()
    assert p.grad is not None and (pk.grad is None or torch.all(pk.grad == 0))


def test_kto_lambdas_balance_the_rarer_kind():
    ld, lu = kto_lambdas(100, 300)
    assert math.isclose(ld * 100 / (lu * 300), 1.0)
    ld, lu = kto_lambdas(300, 100)
    assert math.isclose(ld * 300 / (lu * 100), 1.0)
    assert kto_lambdas(110, 100) == (1.0, 1.0)  # within [1, 4/3]: unchanged


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tok = Tokenizer.train(["Lena's bicycle is red. Tom's hat is blue. What colour is it?"] * 20, 300)
    return tok, GPT(GPTConfig(vocab_size=320, n_layer=2, n_head=2, n_embd=32, block_size=64))


def test_sequence_logprobs_sum_only_the_response(tiny):
    tok, model = tiny
    ids, mask = render_response(tok, "What colour is Lena's bicycle?", "It is red.", 64)
    idx, tgt = collate([(ids, mask)], tok.pad)
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0].log_softmax(-1)[0]
    want = sum(float(logp[i - 1, ids[i]]) for i in range(1, len(ids)) if mask[i])
    assert math.isclose(float(sequence_logprobs(model, idx, tgt).detach()), want, rel_tol=1e-5)
    assert mask[-1] == 1 and ids[-1] == tok.end  # the end token is part of the response


def test_dpo_starts_at_ln2_and_a_gradient_step_raises_chosen_over_rejected(tiny):
    tok, model = tiny
    prompts = ["What colour is Lena's bicycle?", "What colour is Tom's hat?"]
    chosen = [render_response(tok, p, a, 64) for p, a in zip(prompts, ["It is red.", "Tom's hat is blue."])]
    rejected = [render_response(tok, p, a, 64) for p, a in zip(prompts, ["It is blue.", "It is red, red."])]
    rows = chosen + rejected
    ref = reference_logprobs(model, rows, tok.pad)
    idx, tgt = collate(rows, tok.pad)
    pi = sequence_logprobs(model, idx, tgt)
    loss, _ = preference_loss(pi[:2], pi[2:], ref[:2], ref[2:], beta=0.1)
    assert math.isclose(float(loss.detach()), math.log(2), rel_tol=1e-5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = sequence_logprobs(model, idx, tgt)
    assert float((after[:2] - after[2:]).sum()) > float((ref[:2] - ref[2:]).sum())


def test_batch_indices_are_epochs_of_permutations_split_over_ranks():
    n, B = 10, 3
    seen = [i for s in range(10) for i in batch_indices(n, s, 0, B, seed=1)]
    assert sorted(seen[:9]) == sorted(set(seen[:9])) and sorted(seen[:10]) == list(range(10))  # epoch 0: no repeat
    # two ranks with half the batch each see the same examples as one rank with the whole batch
    one = batch_indices(n, 4, 0, 4, seed=2)
    two = batch_indices(n, 4, 0, 2, rank=0, world=2, seed=2) + batch_indices(n, 4, 0, 2, rank=1, world=2, seed=2)
    assert one == two
    # against the documented stream, built here: epochs of permutations seeded by (seed, epoch), one after another;
    # step s of one rank reads its B consecutive positions (step 2 crosses from epoch 0 into epoch 1)
    stream = [int(i) for e in range(4) for i in np.random.default_rng([2, e]).permutation(n)]
    assert all(batch_indices(n, s, 0, 4, seed=2) == stream[4 * s:4 * s + 4] for s in range(9))
