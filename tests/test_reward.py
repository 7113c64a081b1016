"""The reward model and its loss, against hand-computed values and invariants: ln 2 at equal rewards, the reward read
at the last real token whatever the padding, opposite gradients when chosen and rejected swap, normalisation, the
checkpoint round trip, LLaMA 2's combination rule, rank statistics and best-of-N's choice."""
import math

import pytest
import torch

from nanotrain.checkpoint import atomic_save, make_checkpoint
from nanotrain.errors import CheckpointError
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.reward import (RewardModel, best_of_n, bradley_terry_loss, combined_reward, encode_reply,
                              load_reward_model, pairwise_agreement, prompt_interval, reply_row, right_pad, spearman)
from nanotrain.sampling import left_pad
from nanotrain.tokenizer import Tokenizer

CFG = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32, attn="explicit")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(["What colour is Lena's bicycle? Lena's bicycle is red. Tom is a baker in Oakville."] * 3,
                           vocab_size=300)


def random_rm(tok=None, seed=0) -> RewardModel:
    torch.manual_seed(seed)
    rm = RewardModel(CFG, tok)
    torch.nn.init.normal_(rm.head.weight, std=0.5)  # a non-zero head, so rewards differ between sequences
    torch.nn.init.normal_(rm.head.bias, std=0.5)
    return rm.eval()


def test_loss_is_ln2_at_equal_rewards_and_matches_hand_values():
    r = torch.tensor([-3.0, 0.0, 0.7, 12.0])
    loss, acc = bradley_terry_loss(r, r.clone())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert acc.item() == 0.0  # a tie is not a correct ranking
    # -log sigma(d) = log(1 + e^-d): d = 2 -> 0.126928; d = -1 -> 1.313262
    loss, acc = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2, abs=1e-6)
    assert acc.item() == 0.5
    # margin 1 shifts d; centring adds c * (r_c + r_r)^2 = 0.5 * 4
    loss, _ = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]), margin=1.0, center=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)) + 2.0, abs=1e-6)


def test_reward_is_read_at_the_last_real_token_whatever_the_padding():
    rm = random_rm()
    torch.manual_seed(1)
    seqs = [torch.randint(0, 300, (n,)).tolist() for n in (3, 9, 5, 1, 12)]
    # reference: each sequence alone, no padding, the head applied by hand to its last hidden state
    with torch.no_grad():
        ref = torch.stack([rm.head(rm.trunk.hidden_states(torch.tensor([s]))[0, -1]).squeeze() for s in seqs])
        idx, lengths = right_pad(seqs, 299)
        right = rm(idx, lengths)
        extra = torch.cat([idx, torch.full((len(seqs), 7), 299)], 1)  # more right padding changes nothing
        right_more = rm(extra, lengths)
        right_mask = rm(extra, pad_mask=torch.arange(extra.shape[1])[None] < lengths[:, None])
        lidx, lmask = left_pad(seqs, 299)
        left = rm(lidx, pad_mask=lmask)
        values = rm.values(idx)[torch.arange(len(seqs)), lengths - 1]
    for got in (right, right_more, right_mask, left, values):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert ref.std() > 0.01  # the sequences really get different rewards


def test_likelihood_term_is_the_replys_mean_log_probability():
    """r = head(h_last) + w * mean_t log p(y_t | x, y_<t), against each sequence alone through the plain GPT's own
    logits (log-softmax by hand), with the short rows right-padded; a reply cut to the whole context drops its first token
    (nothing before it to predict it from)."""
    torch.manual_seed(0)
    rm = RewardModel(CFG, likelihood=True)
    torch.nn.init.normal_(rm.head.weight, std=0.5)
    rm.likelihood_weight.data.fill_(0.7)
    rm.eval()
    rows = [reply_row(torch.randint(0, 300, (p,)).tolist(), torch.randint(0, 300, (r,)).tolist(), CFG.block_size)
            for p, r in ((3, 4), (10, 1), (5, 9), (30, 6), (2, 40))]
    assert [s for _, s in rows] == [3, 10, 5, 26, 0]  # (30 + 6 and 2 + 40 tokens are cut from the left to 32)
    want = []
    with torch.no_grad():
        for ids, start in rows:
            x = torch.tensor([ids])
            logp = torch.log_softmax(rm.trunk(x)[0][0].double(), -1)  # the GPT's own LM logits, (T, V)
            first = max(start, 1)
            mean = sum(logp[t - 1, ids[t]] for t in range(first, len(ids))) / (len(ids) - first)
            head = rm.head(rm.trunk.hidden_states(x)[0, -1]).squeeze().double()
            want.append(head + 0.7 * mean)
        idx, lengths = right_pad([ids for ids, _ in rows], 299)  # the short rows are right-padded to 32
        got = rm(idx, lengths, starts=torch.tensor([s for _, s in rows]))
    torch.testing.assert_close(got.double(), torch.stack(want), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="starts"):
        rm(idx, lengths)


def test_encode_reply_is_the_chat_template(tok):
    """The reward reads the same ids the chat template renders for the whole conversation."""
    msgs = [{"role": "user", "content": "What colour is Lena's bicycle?"}]
    ids, start = encode_reply(tok, msgs, "Lena's bicycle is red.", 1000)
    full, _ = tok.render_chat(msgs + [{"role": "assistant", "content": "Lena's bicycle is red."}])
    assert ids == full and ids[start - 1] == tok.ai and ids[-1] == tok.end


def test_swapping_chosen_and_rejected_flips_the_gradient():
    """One pair, d = r_c - r_r: grad(-log sigma(d)) = -(1 - sigma(d)) grad d; swapped, grad(-log sigma(-d)) =
    sigma(d) grad d = -e^d * the first. So every parameter's gradient flips sign (scaled by e^d)."""
    rm = random_rm()
    chosen, rejected = torch.randint(0, 300, (1, 7)), torch.randint(0, 300, (1, 7))

    def grads(a, b):
        rm.zero_grad()
        loss, _ = bradley_terry_loss(rm(a), rm(b))
        loss.backward()
        return {n: p.grad.clone() for n, p in rm.named_parameters()}

    with torch.no_grad():
        d = (rm(chosen) - rm(rejected)).item()
    g, g_swapped = grads(chosen, rejected), grads(rejected, chosen)
    assert abs(d) > 1e-3
    nonzero = 0
    for n in g:
        torch.testing.assert_close(g_swapped[n], -math.exp(d) * g[n], atol=1e-6, rtol=1e-4)
        nonzero += int(g[n].abs().max() > 0)
    assert nonzero > 10  # trunk and head both receive gradient


def test_normalised_scores_checkpoint_roundtrip_and_stage_check(tok, tmp_path):
    rm = random_rm(tok)
    prompts = ["What colour is Lena's bicycle?", [{"role": "user", "content": "Who is Tom?"}]] * 3
    replies = ["red", "Lena's bicycle is red.", "Tom is a baker.", "blue", "", "Tom lives in Oakville."]
    stats = rm.normalise(prompts, replies)
    s = rm.score(prompts, replies)
    assert s.mean().item() == pytest.approx(0.0, abs=1e-5) and s.std().item() == pytest.approx(1.0, abs=1e-5)
    # a prompt string is the same conversation as a one-message list
    assert rm.score(["Who is Tom?"], [replies[3]]).item() == pytest.approx(s[3].item(), abs=1e-5)
    path = tmp_path / "rm" / "ckpt.pt"
    atomic_save(make_checkpoint("rm", rm, tok, {}, 1, stats), path)
    rm2, tok2, ckpt = load_reward_model(path)
    assert ckpt["stage"] == "rm" and tok2.to_dict() == tok.to_dict()
    assert float(rm2.reward_std) == pytest.approx(stats["reward_std"])
    torch.testing.assert_close(rm2.score(prompts, replies), s)
    atomic_save(make_checkpoint("sft", GPT(CFG), tok, {}, 1, {}), tmp_path / "sft.pt")
    with pytest.raises(CheckpointError, match="'sft' checkpoint"):
        load_reward_model(tmp_path / "sft.pt")


def test_combined_reward_follows_llama2_rule():
    r_h = torch.tensor([1.0, 2.0, 3.0, 4.0])
    r_s = torch.tensor([-1.0, 0.5, 2.0, -0.2])
    unsafe = torch.tensor([False, False, True, False])
    # safe score decides when the prompt is unsafe (#2) or the safe score is below the threshold 0 (#0, #3)
    assert combined_reward(r_h, r_s, unsafe, threshold=0.0).tolist() == pytest.approx([-1.0, 2.0, 2.0, -0.2])
    assert combined_reward(r_h, r_s, False, threshold=-0.5).tolist() == pytest.approx([-1.0, 2.0, 3.0, 4.0])


def test_rank_statistics_match_hand_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))  # 1 - 6 sum d^2 / n(n^2-1)
    # ties take their average rank: ranks (0, 1.5, 1.5, 3) vs (0, 1, 2, 3) -> r = 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    # prompt 1: reference pairs (0,1) (0,2) (1,2) -> model agrees on 2; prompt 2: one pair, a model tie -> 0.5;
    # reference ties are not counted
    agree, n = pairwise_agreement([([3, 1, 2], [3, 2, 1]), ([1, 1], [0, 1]), ([5, 6], [1, 1])])
    assert n == 4 and agree == pytest.approx(2.5 / 4)


def test_best_of_n_returns_the_highest_scoring_sample(tok):
    class LengthReward:  # a stand-in reward: longer is better
        def score(self, prompts, responses, autocast=None):
            return torch.tensor([float(len(r)) for r in responses])

    torch.manual_seed(0)
    policy = GPT(CFG)
    gen = torch.Generator().manual_seed(0)
    best, texts, scores = best_of_n(policy, tok, LengthReward(), [{"role": "user", "content": "Who is Tom?"}], n=6,
                                    max_new_tokens=8, temperature=1.0, generator=gen)
    assert len(texts) == 6 and scores == [float(len(t)) for t in texts]
    assert len(set(texts)) > 1 and best == max(texts, key=len)


def test_prompt_interval_resamples_whole_prompts():
    """Pairs that share a prompt move together: two prompts of ten pairs each (one all right, one all wrong) leave the
    share anywhere in 0-1, while twenty one-pair prompts pin it near 0.5 (binomial: 95% of draws within about
    0.3-0.7); pairs all right give exactly 1."""
    ok = [True] * 10 + [False] * 10
    assert prompt_interval(ok, ["a"] * 10 + ["b"] * 10) == (0.0, 1.0)
    lo, hi = prompt_interval(ok, [f"p{i}" for i in range(20)])
    assert 0.2 <= lo < 0.5 < hi <= 0.8
    assert prompt_interval([True] * 5, list("abcde")) == (1.0, 1.0)
