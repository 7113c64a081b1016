"""Reward models: the "virtual human" that scores any answer, learned from people's rankings.

A reward model is the GPT trunk with its language-model head replaced by a scalar head: it reads a whole
conversation (prompt + reply) and the head's output at the reply's last token is the reward. It is trained on
pairs (prompt, chosen, rejected) with the Bradley-Terry loss (Ouyang et al. 2022, eq. 1)

    loss = -log sigma(r(x, y_chosen) - r(x, y_rejected) - m)  +  c * (r(x, y_chosen) + r(x, y_rejected))^2

where m is LLaMA 2's optional margin (Touvron et al. 2023, eq. 2) and the second term is the optional "reward
centring" auxiliary loss (Eisenstein et al. 2023): the pairwise loss fixes only differences of rewards, so it keeps
their level near 0. After training, the reward is normalised with the mean and standard deviation of the raw
scores on a reference set (the preference data's replies), stored in the model and its checkpoint: a normalised
reward of 0 is an average reply, +1 one standard deviation better.

Optionally (``likelihood=True``, train_rm.py's default) the reward has a second term: a learned weight w times the
reply's mean log-likelihood under the trunk's own language-model head,

    r(x, y) = head(h_last) + w * (1/|y|) * sum_t log p(y_t | x, y_<t)

Why: a reward model must often judge a fact ("Lena's bicycle is red" vs "... blue"). The SFT model it starts from
already knows the fact, but as a next-token prediction at the position *before* the value, which the last token's
hidden state does not see; a small model does not learn to re-derive it there from a few thousand pairs (on the
built-in world the head alone ranks wrong-fact pairs far worse than the SFT model's own likelihood: RESULTS.md,
stage 3). The term is
DPO's observation turned around: a language model's log-probabilities are a reward signal (Rafailov et al. 2023).
w starts at 1 and is trained with the rest by the same Bradley-Terry loss.

Uses: pick the best of N sampled answers (``best_of_n``), and the reward (and, through ``values``, the initial value
function) of PPO. LLaMA 2 trains two, one for helpfulness and one for safety, and combines them
(``combined_reward``, ``CombinedReward``).

    rm, tok, ckpt = load_reward_model("out/rm_helpful/ckpt.pt")
    rm.score(["What colour is Lena's bicycle?"], ["Lena's bicycle is red."])    # -> tensor([normalised reward])
    python train_rm.py --name helpful          # trains one; bench/bench_best_of_n.py uses two
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nanotrain.checkpoint import check_tokenizer, load_checkpoint, load_model
from nanotrain.errors import CheckpointError, DataError
from nanotrain.gpt import GPT, GPTConfig
from nanotrain.runtime import precision
from nanotrain.sampling import as_messages, generate_replies
from nanotrain.tokenizer import Tokenizer


WORLD_PAIRS = "prefs_{name}_train.jsonl"  # the world's hand-built pairs of each kind (helpful, safe)
RED_TEAM = WORLD_PAIRS.format(name="safe")


def world_pairs_file(name: str, labels: str, world: str) -> str | None:
    """The --world folder's hand-built pairs of kind ``name`` (helpful or safe: prefs_NAME_train.jsonl), when the
    labels are not that folder's own (else None): what the labelling stage's pairs are mixed with, as LLaMA 2 mixes
    open-source preference data into its reward models' training data (Touvron et al. 2023, §3.2.2)."""
    return f"{world}/{WORLD_PAIRS.format(name=name)}" if labels != world != "none" else None


def red_team_file(labels: str, world: str) -> str | None:
    """The --world folder's hand-written safety pairs (world_pairs_file "safe"). The SFT model refuses nearly every
    harmful request, so its own samples (the labelling stage's pairs) hold few pairs of a refusal against a
    compliance; like LLaMA 2's red-team data, the world's pairs supply them. Read by train_rm.py --name safe and
    train_rlhf.py --algo dpo (with_red_team) and, as thumbs, --algo kto."""
    return world_pairs_file("safe", labels, world)


def with_world_pairs(data: str, name: str, labels: str, world: str) -> str:
    """``data`` (comma-separated files) plus world_pairs_file, if any: the default data of train_rm.py."""
    extra = world_pairs_file(name, labels, world)
    return f"{data},{extra}" if extra else data


def with_red_team(data: str, labels: str, world: str) -> str:
    """``data`` plus red_team_file, if any, as the safety model reads them: the default data of train_rlhf.py --algo
    dpo."""
    return with_world_pairs(data, "safe", labels, world)


class RewardModel(nn.Module):
    """GPT trunk + scalar head (+ optionally the reply's likelihood). ``forward`` -> one reward per sequence;
    ``values`` -> the head at every position."""

    def __init__(self, config: GPTConfig, tokenizer: Tokenizer | None = None, likelihood: bool = False):
        super().__init__()
        self.config = config  # (read by checkpoint.make_checkpoint: the architecture travels with the weights)
        self.trunk = GPT(config)  # its lm_head is tied to the embedding: no parameters; used only with likelihood
        self.head = nn.Linear(config.n_embd, 1)
        # w of the likelihood term (module docstring), or None: the head alone
        self.likelihood_weight = nn.Parameter(torch.ones(())) if likelihood else None
        # A zero head makes every initial reward 0, so training starts at loss ln 2 with no preference either way.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Normalisation, set by ``normalise`` after training; buffers, so they are in the state dict (strict load).
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))
        self.tokenizer = tokenizer  # needed only by ``score`` (text in, rewards out)

    @classmethod
    def from_gpt(cls, gpt: GPT, tokenizer: Tokenizer | None = None, likelihood: bool = False) -> "RewardModel":
        """A reward model whose trunk starts as a copy of ``gpt`` (usually the SFT model) and whose head is zero."""
        rm = cls(gpt.config, tokenizer, likelihood)
        rm.trunk.load_state_dict(gpt.state_dict())
        return rm.to(next(gpt.parameters()).device)

    def values(self, idx, pad_mask=None) -> torch.Tensor:
        """(B, T) raw head output at every position: what PPO's value model starts from."""
        return self.head(self.trunk.hidden_states(idx, pad_mask)).squeeze(-1).float()

    def forward(self, idx, lengths=None, pad_mask=None, starts=None) -> torch.Tensor:
        """(B,) raw reward, read at each row's last real token.

        Right-padded batches pass ``lengths`` (B,) (pads after the real tokens change nothing a causal model
        computes, so no mask is needed); a ``pad_mask`` (B, T) of real tokens works for any padding, left included.
        With the likelihood term, ``starts`` (B,) is the column of each row's first reply token.
        """
        head, logprob = self.terms(idx, lengths, pad_mask, starts)
        return head if logprob is None else head + self.likelihood_weight * logprob

    def terms(self, idx, lengths=None, pad_mask=None, starts=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The reward's two terms, (B,) each, before the weight w: the head's output, and the reply's mean
        log-likelihood (None without the likelihood term). Arguments as ``forward``."""
        B, T = idx.shape
        h = self.trunk.hidden_states(idx, pad_mask)
        if lengths is not None:
            last = lengths.to(idx.device) - 1
        elif pad_mask is not None:
            last = (pad_mask.long() * torch.arange(T, device=idx.device)).argmax(1)  # the last True column
        else:
            last = torch.full((B,), T - 1, device=idx.device)
        head = self.head(h[torch.arange(B, device=idx.device), last]).squeeze(-1).float()
        if self.likelihood_weight is None:
            return head, None
        if starts is None:
            raise ValueError("this reward model also reads the reply's likelihood: pass starts (first reply column)")
        return head, self.reply_logprob(h, idx, starts.to(idx.device), last)

    def reply_logprob(self, h, idx, starts, last) -> torch.Tensor:
        """(B,) mean over the reply tokens idx[b, starts[b]..last[b]] of log p(token | everything before it), from
        the trunk's language-model head on the hidden states ``h`` (B, T, C). Only the predicting positions go
        through the head."""
        col = torch.arange(idx.shape[1], device=idx.device)
        first = starts.clamp(min=1)  # a reply cut to the whole context: its first token has nothing before it
        rows, cols = ((col >= first[:, None] - 1) & (col < last[:, None])).nonzero(as_tuple=True)
        logp = -F.cross_entropy(self.trunk.lm_head(h[rows, cols]).float(), idx[rows, cols + 1], reduction="none")
        total = torch.zeros(idx.shape[0], device=idx.device).index_add(0, rows, logp)
        return total / (last - first + 1).clamp(min=1)

    # ----- text in, normalised rewards out
    @torch.no_grad()
    def raw_terms(self, prompts, responses, batch_size: int = 64, autocast=None) -> tuple:
        """``terms`` of ``responses[i]`` to ``prompts[i]``: (N,) head outputs and (N,) reply log-likelihoods (None
        without the likelihood term)."""
        if self.tokenizer is None:
            raise ValueError("this RewardModel has no tokenizer: build it with one or load it with load_reward_model")
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        rows = [encode_reply(self.tokenizer, p, r, self.config.block_size) for p, r in zip(prompts, responses)]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths together: less padding
        head, logprob = torch.empty(len(rows)), torch.empty(len(rows))
        for i in range(0, len(order), batch_size):
            chunk = order[i:i + batch_size]
            idx, lengths = right_pad([rows[j][0] for j in chunk], self.tokenizer.pad, device)
            starts = torch.tensor([rows[j][1] for j in chunk], device=device)
            with precision(autocast, device):
                h, lp = self.terms(idx, lengths, starts=starts)
            head[chunk] = h.cpu()
            if lp is not None:
                logprob[chunk] = lp.cpu()
        self.train(was_training)
        return head, (logprob if self.likelihood_weight is not None else None)

    def raw_scores(self, prompts, responses, batch_size: int = 64, autocast=None) -> torch.Tensor:
        head, logprob = self.raw_terms(prompts, responses, batch_size, autocast)
        return head if logprob is None else head + self.likelihood_weight.detach().cpu() * logprob

    def score(self, prompts, responses, batch_size: int = 64, autocast=None) -> torch.Tensor:
        """Normalised rewards (N,) of ``responses[i]`` to ``prompts[i]`` (a user string or a messages list)."""
        raw = self.raw_scores(prompts, responses, batch_size, autocast)
        return (raw - self.reward_mean.cpu()) / self.reward_std.cpu()

    def normalise(self, prompts, responses, batch_size: int = 64, autocast=None) -> dict:
        """Set the normalisation to the mean and std of the raw scores on a reference set; returns them."""
        raw = self.raw_scores(prompts, responses, batch_size, autocast)
        mean, std = raw.mean(), raw.std().clamp(min=1e-6)
        self.reward_mean.fill_(mean)
        self.reward_std.fill_(std)
        return {"reward_mean": float(mean), "reward_std": float(std)}


# ----- the data side: conversations to token ids

def encode_reply(tok: Tokenizer, prompt, response: str, max_len: int) -> tuple[list[int], int]:
    """The conversation prompt -> response in the chat template, ending with the reply's end-of-turn token (where
    the reward is read), and the column where the reply starts. Too long: the *start* is cut, since the reply at
    the end is what is being judged."""
    return reply_row(tok.render_prompt(as_messages(prompt)), tok.encode_message(response) + [tok.end], max_len)


def reply_row(prompt_ids: list[int], reply_ids: list[int], max_len: int) -> tuple[list[int], int]:
    """(prompt + reply cut from the left to max_len tokens, the column of the reply's first token)."""
    ids = (prompt_ids + reply_ids)[-max_len:]
    return ids, max(0, len(ids) - len(reply_ids))


def right_pad(seqs: list[list[int]], pad_id: int, device="cpu"):
    """(B, T) ids padded on the right to the longest row, and the (B,) lengths."""
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return idx.to(device), torch.tensor([len(s) for s in seqs], device=device)


class PairBatches:
    """Training batches of preference pairs for the reward model: B chosen rows then B rejected rows per micro-batch,
    a pure function of (step, micro) so a resumed run sees the same data; each rank takes its slice of the step.

    ``pairs`` are (prompt ids ending with the assistant marker, chosen reply ids, rejected reply ids). Replies run
    from ~10 to ~180 tokens on the built-in world and a batch is padded to its longest, so random batches spend most
    of their compute on pads: each epoch sorts windows of 16 batches by length, cuts them into batches and shuffles
    the batches (as Hugging Face's group_by_length), which keeps the order random and roughly triples the useful work
    per step. With ``mismatch`` > 0 that share of pairs has its rejected reply swapped for the chosen reply to another
    prompt in the batch: a reply written for a different request is worse than one written for this one. Without such
    pairs a reward model can often rank replies without reading the prompt at all (the built-in safety pairs:
    refusals there are either specific, and good, or generic, and bad)."""

    def __init__(self, pairs, batch_size: int, grad_accum: int, rank: int, world: int, block_size: int, pad: int,
                 device, seed: int = 0, mismatch: float = 0.0):
        self.pairs, self.B, self.grad_accum, self.rank = pairs, batch_size, grad_accum, rank
        self.G = batch_size * grad_accum * world  # pairs per optimizer step, all ranks together
        if len(pairs) < self.G:
            raise DataError(f"{len(pairs)} training pairs is fewer than one batch of {self.G}: lower --batch-size")
        self.n_batches = len(pairs) // self.G  # per epoch; each epoch leaves out a different random remainder
        self.block_size, self.pad, self.device, self.seed, self.mismatch = block_size, pad, device, seed, mismatch
        self.size = np.array([len(p) + max(len(c), len(r)) for p, c, r in pairs])
        self._epoch, self._batches = None, None

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(len(self.pairs))[:self.n_batches * self.G]
            grouped = np.concatenate([w[np.argsort(self.size[w], kind="stable")]
                                      for w in np.split(perm, range(16 * self.G, len(perm), 16 * self.G))])
            batches = np.split(grouped, self.n_batches)
            self._epoch, self._batches = epoch, [batches[i] for i in rng.permutation(self.n_batches)]
        return self._batches

    def batch(self, step: int, micro: int):
        batch = self.epoch_batches(step // self.n_batches)[step % self.n_batches]  # the global batch
        swap = np.random.default_rng([self.seed, step]).random(self.G) < self.mismatch
        first = self.rank * self.B * self.grad_accum + micro * self.B
        chosen, rejected = [], []
        for k in range(first, first + self.B):
            prompt, good, bad = self.pairs[batch[k]]
            other = self.pairs[batch[(k + 1) % self.G]]
            if swap[k] and other[0] != prompt:
                bad = other[1]
            chosen.append((prompt, good))
            rejected.append((prompt, bad))
        return pad_replies(chosen + rejected, self.block_size, self.pad, self.device)


def encode_pairs(tok: Tokenizer, pairs) -> list[tuple[list[int], list[int], list[int]]]:
    """Each preference pair as (prompt ids ending with the assistant marker, chosen reply ids, rejected reply ids),
    each reply ending with its end-of-turn token (the same ids as encode_reply)."""
    return [(tok.render_prompt(p.messages), tok.encode_message(p.chosen) + [tok.end],
             tok.encode_message(p.rejected) + [tok.end]) for p in pairs]


def pad_replies(rows, block_size: int, pad: int, device):
    """Right-padded ids, lengths and reply start columns of [(prompt ids, reply ids)], each cut to the context."""
    rows = [reply_row(p, r, block_size) for p, r in rows]
    idx, lengths = right_pad([ids for ids, _ in rows], pad, device)
    return idx, lengths, torch.tensor([start for _, start in rows], device=device)


# ----- the loss

def bradley_terry_loss(r_chosen, r_rejected, margin=0.0, center: float = 0.0):
    """Mean over pairs of -log sigma(r_c - r_r - margin) + center * (r_c + r_r)^2; returns (loss, accuracy).

    Under the Bradley-Terry model P(chosen > rejected) = sigma(r_c - r_r) (Bradley & Terry 1952), so the first term
    is the negative log-likelihood of the human label (Ouyang et al. 2022, eq. 1). ``margin`` (a float or a (B,)
    tensor) asks for a gap of at least that much, larger for more clear-cut pairs (LLaMA 2, eq. 2). ``center``
    weighs the reward-centring term (Eisenstein et al. 2023), which pins the otherwise free level of the rewards.
    """
    diff = r_chosen.float() - r_rejected.float()
    loss = -F.logsigmoid(diff - margin).mean()  # eq. 1 (with LLaMA 2's margin)
    if center:
        loss = loss + center * ((r_chosen.float() + r_rejected.float()) ** 2).mean()
    return loss, (diff > 0).float().mean()


# ----- loading and using a trained reward model

def load_reward_model(path, device="cpu", attn: str | None = None):
    """The reward model of an "rm" checkpoint, ready to ``score``. Returns (rm, tokenizer, ckpt)."""
    ckpt = load_checkpoint(path, stages=("rm",))
    cfg = GPTConfig.from_dict(ckpt["model_config"])
    if attn is not None:
        cfg.attn = attn
    tok = Tokenizer.from_dict(ckpt["tokenizer"])
    rm = RewardModel(cfg, tok, likelihood=ckpt.get("likelihood", False))
    rm.load_state_dict(ckpt["model"])  # strict: trunk, head and normalisation must all be there
    return rm.to(device).eval(), tok, ckpt


@torch.no_grad()
def best_of_n(policy, tok, reward_model, messages, n: int, max_new_tokens: int = 64, temperature: float = 1.0,
              autocast=None, generator: torch.Generator | None = None):
    """Sample ``n`` replies to one conversation and keep the one the reward model scores highest (rejection
    sampling, as LLaMA 2 §3.2.3 uses to pick its fine-tuning targets). ``reward_model`` is anything with
    ``score(prompts, responses)``: a RewardModel or a CombinedReward. Returns (best_text, texts, scores)."""
    replies = generate_replies(policy, tok, [messages] * n, max_new_tokens, temperature, batch_size=n,
                               generator=generator, autocast=autocast)
    texts = [r.text for r in replies]
    scores = reward_model.score([messages] * n, texts, autocast=autocast).tolist()
    return texts[int(np.argmax(scores))], texts, scores


# ----- two reward models, as LLaMA 2

# Thresholds, in normalised reward units (0 = an average reply of the preference data, which holds as many rejected
# replies as chosen ones, so a negative safety score means "looks more like the unsafe replies"):
SAFETY_THRESHOLD = 0.0  # LLaMA 2 uses 0.15 on its safety RM's sigmoid-scaled score; below it, safety decides
REFUSAL_PROBE = "I'm sorry, but I can't help with that."


def combined_reward(r_helpful, r_safe, unsafe_prompt, threshold: float = SAFETY_THRESHOLD):
    """LLaMA 2's combination (Touvron et al. 2023, §3.2.2, eq. 4): the safety reward decides when the prompt is
    unsafe or the reply's safety reward is below ``threshold``, the helpfulness reward otherwise:

        R_c = R_s  if IS_SAFETY(p) or R_s < threshold  else  R_h

    (LLaMA 2 then whitens logit(R_c); ours are already normalised.) All arguments broadcast: (N,) tensors, or
    ``unsafe_prompt`` a bool."""
    use_safe = torch.as_tensor(unsafe_prompt, device=r_safe.device) | (r_safe < threshold)
    return torch.where(use_safe, r_safe, r_helpful)


class CombinedReward:
    """Helpfulness and safety reward models behind one ``score``, for best_of_n and PPO.

    IS_SAFETY(p) without an oracle: ask the safety RM itself whether, for this prompt, a generic refusal
    (``REFUSAL_PROBE``) scores above ``unsafe_margin`` in normalised units, 0 being an average reply of its training
    pairs. The safety RM learned from pairs where refusing a harmful request is preferred and refusing a benign one
    is not, so that sign is its own verdict on the prompt. (Comparing the refusal with a generic compliance instead
    fails: "Sure! Here is how..." looks like the rejected replies to harmful requests whatever the prompt, so every
    prompt looked unsafe.) This works only if the safety pairs make the model read the prompt, i.e. when refusals
    cannot be told good from bad by their wording alone; bench/bench_best_of_n.py prints how often it is right.
    Pass ``unsafe`` to ``score`` to use known labels instead, as LLaMA 2 does.
    """

    def __init__(self, helpful: RewardModel, safe: RewardModel, threshold: float = SAFETY_THRESHOLD,
                 unsafe_margin: float = 0.0):
        self.helpful, self.safe, self.threshold, self.unsafe_margin = helpful, safe, threshold, unsafe_margin

    def unsafe_prompts(self, prompts, autocast=None) -> torch.Tensor:
        """(N,) bool: the safety RM prefers refusing these prompts."""
        return self.safe.score(prompts, [REFUSAL_PROBE] * len(prompts), autocast=autocast) > self.unsafe_margin

    def score(self, prompts, responses, batch_size: int = 64, autocast=None, unsafe=None) -> torch.Tensor:
        if unsafe is None:
            keys = [repr(p) for p in prompts]  # best-of-N repeats one prompt: judge each distinct prompt once
            distinct = list(dict.fromkeys(keys))
            verdict = self.unsafe_prompts([prompts[keys.index(k)] for k in distinct], autocast)
            unsafe = torch.stack([verdict[distinct.index(k)] for k in keys])
        r_h = self.helpful.score(prompts, responses, batch_size, autocast)
        r_s = self.safe.score(prompts, responses, batch_size, autocast)
        return combined_reward(r_h, r_s, torch.as_tensor(unsafe), self.threshold)


# ----- the reward PPO and online DPO optimise

class GoldReward:
    """The gold scorer as the reward model (``--reward gold``): PPO with a perfect judge, the upper bound a learned
    reward model is measured against (and a check that the RL machinery works, separate from the reward model)."""

    def __init__(self, gold):
        self.gold = gold

    def score(self, prompts, responses, autocast=None, unsafe=None):
        return torch.tensor([self.gold.score_helpful(p, r) for p, r in zip(prompts, responses)])


def load_scorer(reward: str, safety_reward: str | None, init: str, tok_dict: dict, device, gold=None):
    """(reward model, scorer) for a policy trained from ``init``: the reward model at ``reward``, and the scorer, which
    is that model or, with ``safety_reward``, LLaMA 2's helpful + safety combination (tokenizers must be the
    policy's). With ``reward`` "gold" the scorer is the gold scorer and the "reward model" (what PPO's value model
    starts from) is the init model's trunk with a zero head."""
    if reward == "gold":
        if gold is None:
            raise CheckpointError("--reward gold needs a world with gold scorers (--world)")
        sft = load_model(init, stages=("sft", "rlhf"), device=device)[0]
        return RewardModel.from_gpt(sft).requires_grad_(False), GoldReward(gold)
    rm, _, ck = load_reward_model(reward, device)
    check_tokenizer(tok_dict, ck["tokenizer"], init, reward)
    scorer = rm
    if safety_reward:
        safe, _, ck2 = load_reward_model(safety_reward, device)
        check_tokenizer(tok_dict, ck2["tokenizer"], init, safety_reward)
        scorer = CombinedReward(rm, safe)
    for m in (rm, getattr(scorer, "safe", rm)):
        m.requires_grad_(False)
    return rm, scorer


def labelled(scorer, prompts, harmful, autocast):
    """score(prompts, texts) of ``scorer``; with LLaMA 2's combination and a prompt file that labels its prompts
    harmful or not (LLaMA 2's prompt sets are labelled, as rl_prompts.jsonl is), the labels decide which prompts the
    safety model judges, instead of the combination's own probe."""
    label = None if harmful is None else {repr(p): h for p, h in zip(prompts, harmful)}

    def score(ps, texts):
        if isinstance(scorer, CombinedReward) and label is not None:
            return scorer.score(ps, texts, autocast=autocast, unsafe=torch.tensor([label[repr(p)] for p in ps]))
        return scorer.score(ps, texts, autocast=autocast)
    return score


# ----- agreement with a reference scorer (the gold scores)

def rankdata(x) -> np.ndarray:
    """Ranks 0..n-1, ties given their average rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # average the ranks of tied values
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (nan if either side is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def pair_agreements(model, ref, eps: float = 1e-6) -> list[float]:
    """For each pair of replies to one prompt that the reference scores apart (``model``, ``ref``: their scores):
    1 if the model orders it the same way, 0.5 on a model tie, else 0."""
    out = []
    for i in range(len(ref)):
        for j in range(i + 1, len(ref)):
            if abs(ref[i] - ref[j]) > eps:
                d = (model[i] - model[j]) * (ref[i] - ref[j])
                out.append(1.0 if d > 0 else 0.5 if model[i] == model[j] else 0.0)
    return out


def pairwise_agreement(groups, eps: float = 1e-6) -> tuple[float, int]:
    """Among pairs of replies *to the same prompt* that the reference scores differently, the share the model
    orders the same way (what best-of-N and PPO depend on). ``groups``: [(model_scores, reference_scores)] per
    prompt. Returns (agreement, number of such pairs); a model tie counts as half."""
    agree = [a for model, ref in groups for a in pair_agreements(model, ref, eps)]
    return (sum(agree) / len(agree) if agree else float("nan")), len(agree)


def prompt_interval(ok: list, prompts: list, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the share of pairs ordered right (``ok``: 1 / True right, 0 wrong, 0.5 a tie), by the percentile
    bootstrap over prompts: the pairs of one prompt are answers to it ranked against each other, not independent
    draws, so whole prompts are resampled."""
    by_prompt: dict[str, list] = {}
    for o, p in zip(ok, prompts):
        by_prompt.setdefault(repr(p), []).append(o)  # (a prompt may be a list of messages)
    groups = [(sum(v), len(v)) for v in by_prompt.values()]
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(groups), (draws, len(groups)), generator=g)
    right, n = torch.tensor([float(r) for r, _ in groups]), torch.tensor([m for _, m in groups])
    shares = (right[picks].sum(1) / n[picks].sum(1)).sort().values
    return shares[int(0.025 * draws)].item(), shares[int(0.975 * draws) - 1].item()


@torch.no_grad()
def gold_agreement(rm, policy, tok, gold_score, prompt_files, samples: int, max_new_tokens: int,
                   temperature: float, generator=None, autocast=None) -> dict:
    """Does the reward model rank fresh answers the way a reference scorer does? ``samples`` answers of ``policy`` to
    each prompt of each of ``prompt_files`` ({name: prompts}), scored by ``rm`` and by ``gold_score(prompt, reply)``:
    Spearman over all replies, and pairwise agreement within each prompt (the choice best-of-N and PPO make)."""
    out, pooled_rm, pooled_gold = {}, [], []
    for fname, prompts in prompt_files.items():
        rep = [p for p in prompts for _ in range(samples)]
        texts = [r.text for r in generate_replies(policy, tok, rep, max_new_tokens, temperature, generator=generator,
                                                  autocast=autocast)]
        r_model = rm.score(rep, texts, autocast=autocast).tolist()
        r_gold = [gold_score(p, t) for p, t in zip(rep, texts)]
        groups = [(r_model[i:i + samples], r_gold[i:i + samples]) for i in range(0, len(rep), samples)]
        agree, n_pairs = pairwise_agreement(groups)
        out.update({f"gold_spearman_{fname}": spearman(r_model, r_gold), f"gold_pairwise_{fname}": agree,
                    f"gold_pairs_{fname}": n_pairs})
        pooled_rm += r_model
        pooled_gold += r_gold
    if pooled_rm:
        out["gold_spearman"] = spearman(pooled_rm, pooled_gold)
    return out
