"""PPO's pieces against hand-computed values and invariants: GAE, the KL estimators, reward shaping, whitening, the
clipped losses, the adaptive KL controller, one whole iteration on a tiny model (ratio 1, no clipping at first), and
sixteen that raise a reward the tiny model can reach."""
import math

import pytest
import torch
import torch.nn as nn

from nanotrain.gpt import GPT, GPTConfig
from nanotrain.ppo import (AdaptiveKLController, gae, kl_per_token, masked_whiten, policy_loss, PolicyAndValue,
                           ppo_iteration, ppo_update, PPOConfig, rloo, RunningMoments, sample_rollouts,
                           score_and_advantages, shape_rewards, value_loss)
from nanotrain.tokenizer import Tokenizer


def test_gae_matches_hand_computation_with_end_token_in_the_middle_and_padding_after():
    gamma, lam = 0.9, 0.8
    # Row 0: the answer ends at t=1 (its end token), t=2,3 are padding holding garbage that must not leak in.
    # Row 1: all four tokens are real.
    rewards = torch.tensor([[0.1, 1.0, 5.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 9.0, 9.0], [0.1, 0.2, 0.3, 0.4]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # Row 0 by hand: delta_1 = 1.0 + 0 - 0.2 = 0.8 (terminal: no bootstrap); A_1 = 0.8
    #                delta_0 = 0.1 + 0.9 * 0.2 - 0.5 = -0.22;  A_0 = -0.22 + 0.9 * 0.8 * 0.8 = 0.356
    # Row 1: A_3 = 0.6; A_2 = 0.06 + 0.72 * 0.6 = 0.492; A_1 = 0.07 + 0.72 * 0.492 = 0.42424;
    #        A_0 = 0.08 + 0.72 * 0.42424 = 0.3854528
    expected = torch.tensor([[0.356, 0.8, 0.0, 0.0], [0.3854528, 0.42424, 0.492, 0.6]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values * mask)


def test_gae_with_gamma_lambda_one_is_return_minus_value():
    r, v, m = torch.randn(3, 6), torch.randn(3, 6), torch.ones(3, 6)
    adv, _ = gae(r, v, m, 1.0, 1.0)
    torch.testing.assert_close(adv, r.flip(1).cumsum(1).flip(1) - v)


def test_kl_estimators_zero_for_identical_policies_and_k3_nonnegative():
    logp = torch.randn(4, 7).log_softmax(-1)
    for est in ("k1", "k3"):
        assert torch.equal(kl_per_token(logp, logp.clone(), est), torch.zeros_like(logp))
    a, b = torch.randn(50, 9) * 3, torch.randn(50, 9) * 3
    assert (kl_per_token(a, b, "k3") >= 0).all()
    # both estimate the same KL: sample from p and average (k1 and k3 are unbiased)
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    x = torch.multinomial(p, 200000, replacement=True, generator=torch.Generator().manual_seed(0))
    exact = float((p * (p / q).log()).sum())
    for est in ("k1", "k3"):
        assert abs(float(kl_per_token(p.log()[x], q.log()[x], est).mean()) - exact) < 0.01
    with pytest.raises(ValueError):
        kl_per_token(a, b, "k9")


def test_rewards_penalise_kl_everywhere_and_add_the_score_at_the_last_real_token():
    kl = torch.tensor([[0.5, 1.0, 2.0], [0.1, 0.2, 0.3]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    r = shape_rewards(torch.tensor([3.0, -1.0]), kl, mask, beta=0.1)
    torch.testing.assert_close(r, torch.tensor([[-0.05, -0.1 + 3.0, 0.0], [-0.01, -0.02, -0.03 - 1.0]]))


def test_whitening_gives_zero_mean_unit_variance_on_the_masked_entries():
    x, m = torch.randn(5, 8) * 4 + 3, (torch.rand(5, 8) > 0.3).float()
    w = masked_whiten(x, m)
    vals = w[m.bool()]
    assert abs(float(vals.mean())) < 1e-5 and abs(float(vals.var(unbiased=False)) - 1) < 1e-4
    assert (w[~m.bool()] == 0).all()


def test_running_moments_match_the_whole_history():
    rm, seen = RunningMoments(), []
    for i in range(5):
        x = torch.randn(7 + i) * (i + 1) + i
        rm.update(x)
        seen.append(x)
    allx = torch.cat(seen).double()
    assert abs(rm.mean - float(allx.mean())) < 1e-9 and abs(rm.var - float(allx.var(unbiased=False))) < 1e-9


def test_clipped_policy_loss_by_hand():
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5 (clipped at 1.2), 0.5 (clipped at 0.8), 1.1
    loss, clipfrac, _, _ = policy_loss(new, old, adv, torch.ones(1, 3), clip=0.2)
    # per token max(-A rho, -A clip(rho)): -1.2, 0.8, -2.2 -> mean -0.8667; two of three clipped
    assert math.isclose(float(loss), (-1.2 + 0.8 - 2.2) / 3, rel_tol=1e-6)
    assert math.isclose(float(clipfrac), 2 / 3, rel_tol=1e-6)
    vl, _ = value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]), torch.ones(1, 1), 0.2)
    assert math.isclose(float(vl), 0.5 * max(1.0, (0.2 - 2) ** 2), rel_tol=1e-6)  # the clipped error is larger


def test_adaptive_kl_controller_moves_beta_toward_the_target():
    c = AdaptiveKLController(0.1, target=6.0, horizon=100)
    c.update(12.0, n=10)  # KL too high: error clipped to +0.2 -> beta * (1 + 0.02)
    assert math.isclose(c.beta, 0.102)
    c.update(3.0, n=10)  # too low: -0.2
    assert math.isclose(c.beta, 0.102 * 0.98)


class TinyValue(nn.Module):
    """What the value model is: a GPT trunk with a scalar head (the reward model's shape)."""

    def __init__(self, cfg):
        super().__init__()
        self.trunk, self.head = GPT(cfg), nn.Linear(cfg.n_embd, 1)


def tiny_actor_critic():
    """A tokenizer, a random tiny GPT policy, its frozen copy as the reference, and both trained networks."""
    torch.manual_seed(0)
    tok = Tokenizer.train(["Lena lives in Oakville and her bicycle is red. Tom has a blue hat."] * 20, 300)
    cfg = GPTConfig(vocab_size=300, n_layer=2, n_head=2, n_embd=32, block_size=64)
    policy, ref = GPT(cfg), GPT(cfg)
    ref.load_state_dict(policy.state_dict())
    return tok, policy, ref, PolicyAndValue(policy, TinyValue(cfg))


def test_first_minibatch_has_ratio_one_and_no_clipping_and_training_moves_the_policy():
    tok, policy, ref, ac = tiny_actor_critic()
    opt = torch.optim.AdamW(ac.parameters(), lr=1e-2)
    pcfg = PPOConfig(rollout_batch=8, max_new_tokens=10, minibatch=4, ppo_epochs=2)
    prompts = ["What colour is Lena's bicycle?", "Where does Lena live?"] * 4
    g = torch.Generator().manual_seed(0)
    ro, stats = ppo_iteration(prompts, ac, ref, tok, lambda ro: torch.randn(len(ro.texts), generator=g), opt, pcfg,
                              beta=0.1, generator=g)
    assert stats["ratio_first"] < 1e-5 and stats["clipfrac_first"] == 0.0
    assert abs(stats["kl"]) < 1e-5  # policy == reference when the rollouts were taken
    assert ro.idx.shape[1] == ro.P + ro.mask.shape[1] and ro.mask.sum(1).min() >= 1
    assert ro.advantages.shape == ro.mask.shape and (ro.advantages[ro.mask == 0] == 0).all()
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), ref.parameters()))
    for k in ("entropy", "approx_kl", "value_loss", "length", "time_rollout", "time_scoring", "time_training"):
        assert math.isfinite(stats[k])


def test_ppo_raises_a_reward_it_can_reach():
    """The update goes the right way: rewarded for the share of its answer's tokens in the lower half of the vocabulary
    (about half at random init), a tiny policy raises that share within a few iterations (0.44-0.51 over the first
    three, 0.62-0.74 over iterations 14-16 on seeds 0-3). No penalty for never ending: the end token is in the upper
    half, so the penalty would fight the reward."""
    tok, _, ref, ac = tiny_actor_critic()
    opt = torch.optim.AdamW(ac.parameters(), lr=3e-3)
    pcfg = PPOConfig(rollout_batch=16, max_new_tokens=8, minibatch=8, ppo_epochs=2, missing_end_penalty=0.0)
    prompts = ["What colour is Lena's bicycle?", "Where does Lena live?"] * 8
    g = torch.Generator().manual_seed(0)

    def low_share(ro):
        resp = ro.idx[:, ro.P:]
        return ((resp < 150).float() * ro.mask).sum(1) / ro.mask.sum(1)

    moments = RunningMoments()
    shares = [ppo_iteration(prompts, ac, ref, tok, low_share, opt, pcfg, beta=0.01, moments=moments,
                            generator=g)[1]["score"] for _ in range(16)]
    assert sum(shares[-3:]) / 3 > sum(shares[:3]) / 3 + 0.1, shares


def test_rloo_baseline_is_the_mean_of_the_other_answers():
    s = torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, 5.0])  # two prompts, three answers each
    want = [1 - 0.25, 0 - 0.75, 0.5 - 0.5, 2 - 3.5, 2 - 3.5, 5 - 2]  # hand-computed: score - mean of the other two
    assert torch.allclose(rloo(s, 3), torch.tensor(want))


def test_value_model_learns_the_returns_of_a_fixed_batch():
    """The value warm-up: with the policy held still, epochs over one batch of rollouts lower the value loss and
    leave the policy's weights untouched."""
    tok, policy, ref, ac = tiny_actor_critic()
    torch.nn.init.zeros_(ac.value.head.weight)
    torch.nn.init.zeros_(ac.value.head.bias)
    opt = torch.optim.AdamW(ac.parameters(), lr=3e-3, weight_decay=0.0)
    pcfg = PPOConfig(rollout_batch=8, max_new_tokens=8, minibatch=8, ppo_epochs=1, vf_coef=1.0, clip_value=10.0)
    g = torch.Generator().manual_seed(0)
    ro = sample_rollouts(policy, tok, ["What colour is Lena's bicycle?", "Where does Lena live?"] * 4, 8, 1.0, g)
    score_and_advantages(ro, ac, ref, torch.linspace(-1, 1, 8), pcfg, beta=0.0)
    before = [p.detach().clone() for p in policy.parameters()]
    losses = [ppo_update(ro, ac, opt, pcfg, generator=g, train_policy=False)["value_loss"] for _ in range(30)]
    assert losses[-1] < 0.3 * losses[0], losses
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
