"""Bench: where a PPO iteration's time goes, and DPO training throughput beside TRL's DPOTrainer, in one run.

    OMP_NUM_THREADS=1 python bench/bench_rlhf.py     # both parts; prints two Markdown tables (~15 min on 1 core)
    python bench/bench_rlhf.py --part dpo --no-bf16  # DPO, fp32 only (~6 min)

PPO: a few iterations of nanotrain.ppo.ppo_iteration on the pipeline's models (out/sft + out/rm_helpful, or random
"tiny" ones with a freshly trained BPE if those do not exist yet), timed in three phases: rollout (KV-cached sampling),
scoring and training (the PPO epochs). Scoring is split further, by timing around the calls (forward hooks on the
reference, a clock around the reward model): the reward model, the reference log-probs, and the rest (policy
log-probs, values, GAE). Baseline measured in the same run: one supervised step (forward + backward) of the policy on
the same rollout tokens, so "an iteration costs N SFT steps" holds across machines.

DPO: pairs per second of training steps for GPT-2 with 6 layers, 384 wide (50257-token vocabulary), 8 pairs per
step, each sequence 256 tokens (64 prompt + 192 response), random weights and tokens; the mean of the steps after one
warm-up step. Both sides: the same threads, dtype and sequence lengths (printed per row), AdamW, gradient norm clipped
at 1, no dropout. Ours: nanotrain.dpo as train_rlhf.py runs it (SequenceLogprob: the output layer only on the
response positions), with the reference log-probs computed once up front. TRL: trl.DPOTrainer on transformers'
GPT2LMHeadModel of the same shape, twice: like for like (precompute_ref_log_probs, no gradient checkpointing) and
with its defaults (a reference forward every step, gradient checkpointing). Every row reports the reference pass:
its one-time cost per pair, and pairs/s counting it once per epoch. TRL, transformers and datasets are a bench-only
install (pip install trl transformers datasets; measured with trl 1.16.0, transformers 5.24.0, torch 2.13.0 CPU);
without them the TRL rows are skipped with one line and ours still print.

Why TRL is slower here: its fused LM head (trl.kernels.chunked_logprob) runs on CPU as torch ops over tiles of every
position, not only the response's (Triton, which scores only the labelled positions, is for GPUs), recomputes each
tile's logits in the backward pass (one more output-layer matmul, the largest one in this model), and also computes
entropy, mean logit and top-1 metrics on every tile. bf16 autocast is slower than fp32 for both on this CPU
(nanotrain.runtime.cpu_bf16_is_faster), so fp32 is the comparison that counts.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.cli import flag, parse_config
from nanotrain.dpo import SequenceLogprob, collate, preference_loss, reference_logprobs
from nanotrain.gpt import GPT, PRESETS, GPTConfig, padded_vocab
from nanotrain.ppo import PolicyAndValue, PPOConfig, RunningMoments, ppo_iteration
from nanotrain.trainer import make_optimizer


@dataclass
class BenchConfig:
    part: str = flag("all", "ppo | dpo | all")
    init: str = flag("out/sft/ckpt.pt", "PPO policy (random 'tiny' weights if the file does not exist)")
    reward: str = flag("out/rm_helpful/ckpt.pt", "PPO reward model (random if the file does not exist)")
    prompts: str = flag("data/tinyworld/rl_prompts.jsonl", "PPO prompts")
    iterations: int = flag(3, "PPO iterations timed (after one warm-up iteration)")
    rollout_batch: int = flag(32, "PPO prompts per iteration")
    max_new_tokens: int = flag(40, "PPO answer length limit")
    dpo_steps: int = flag(3, "DPO steps timed per implementation (after one warm-up step)")
    pairs: int = flag(8, "DPO pairs per step")
    prompt_len: int = flag(64, "DPO prompt tokens")
    response_len: int = flag(192, "DPO response tokens (prompt + response = sequence length)")
    bf16: bool = flag(True, "also time both DPO implementations in bf16 autocast")
    json: str = flag("", "also write the results to this JSON file")


def timed(fn, sync=lambda: None):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


# ----------------------------------------------------------------------------------------------------------------
# PPO: rollout / scoring / training split


def ppo_models(cfg, device):
    from nanotrain.checkpoint import load_model
    from nanotrain.reward import RewardModel, load_reward_model
    if Path(cfg.init).exists() and Path(cfg.reward).exists():
        policy, tok, _ = load_model(cfg.init, stages=("sft", "rlhf"), device=device)
        reference = load_model(cfg.init, stages=("sft", "rlhf"), device=device)[0]
        rm = load_reward_model(cfg.reward, device)[0]
        return policy, reference, rm, tok, "trained (" + cfg.init + ")"
    from nanotrain.data import read_jsonl
    from nanotrain.tokenizer import Tokenizer
    texts = [m["content"] for _, r in read_jsonl("data/tinyworld/sft_train.jsonl") for m in r["messages"]]
    tok = Tokenizer.train(texts, 4096)
    gcfg = GPTConfig(**PRESETS["tiny"], vocab_size=padded_vocab(tok.n_vocab))
    policy = GPT(gcfg).to(device)
    reference = GPT(gcfg).to(device)
    reference.load_state_dict(policy.state_dict())
    rm = RewardModel.from_gpt(policy, tok)
    return policy, reference, rm, tok, "random tiny (no checkpoints yet; answers run to the length limit)"


class PassClock:
    """Seconds spent in one model's forward passes, from its token embedding's input to its output layer's output
    (forward hooks: nothing in the timed code changes)."""

    def __init__(self, gpt):
        self.seconds, self._t = 0.0, None
        gpt.transformer.wte.register_forward_pre_hook(self._start)
        gpt.lm_head.register_forward_hook(self._stop)

    def _start(self, *_):
        self._t = time.perf_counter()

    def _stop(self, *_):
        self.seconds += time.perf_counter() - self._t

    def take(self) -> float:
        s, self.seconds = self.seconds, 0.0
        return s


def bench_ppo(cfg, rt) -> dict:
    from nanotrain.data import read_jsonl
    policy, reference, rm, tok, what = ppo_models(cfg, rt.device)
    ac = PolicyAndValue(policy, copy.deepcopy(rm))
    opt = make_optimizer(ac, 1e-6, 0.0, device_type=rt.device.type)
    pcfg = PPOConfig(rollout_batch=cfg.rollout_batch, max_new_tokens=cfg.max_new_tokens)
    prompts = [r["prompt"] for _, r in read_jsonl(cfg.prompts, required=("prompt",))]
    moments, g = RunningMoments(), torch.Generator().manual_seed(0)
    ref_clock, rm_seconds = PassClock(reference), []

    def score_fn(ro):
        t, score = timed(lambda: rm.score(ro.prompts, ro.texts, autocast=rt.autocast))
        rm_seconds.append(t)
        return score

    phases = {"time_rollout": [], "time_scoring": [], "time_training": [], "reward_model": [], "reference": []}
    lengths, sft_steps = [], []
    for it in range(cfg.iterations + 1):
        batch = prompts[it * cfg.rollout_batch:(it + 1) * cfg.rollout_batch]
        ro, st = ppo_iteration(batch, ac, reference, tok, score_fn, opt, pcfg, 0.05, moments, g, rt)
        st.update(reward_model=rm_seconds.pop(), reference=ref_clock.take())
        # the baseline: one supervised step of the policy on exactly these tokens
        x, y = ro.idx[:, :-1], torch.where(ro.pad_mask[:, 1:], ro.idx[:, 1:], -1)

        def sft_step():
            with rt.autocast():
                loss = policy(x, y, pad_mask=ro.pad_mask[:, :-1])[1]
            loss.backward()
            opt.zero_grad(set_to_none=True)  # (no step: the timing is forward + backward + zeroing)
        t_sft, _ = timed(sft_step)
        if it == 0:
            continue  # warm-up
        for k in phases:
            phases[k].append(st[k])
        lengths.append(st["length"])
        sft_steps.append(t_sft)
    res = {k: statistics.mean(v) for k, v in phases.items()}
    res.update(total=res["time_rollout"] + res["time_scoring"] + res["time_training"],
               sft_step=statistics.mean(sft_steps), answer_tokens=statistics.mean(lengths), models=what,
               rollout_batch=cfg.rollout_batch, ppo_epochs=pcfg.ppo_epochs, minibatch=pcfg.minibatch)
    return res


def print_ppo_table(cfg, r):
    print(f"\nPPO iteration ({r['models']}; {r['rollout_batch']} prompts, {r['answer_tokens']:.0f} answer tokens "
          f"on average, {r['ppo_epochs']} epochs of minibatches of {r['minibatch']}; {torch.get_num_threads()} "
          f"thread(s); mean of {cfg.iterations} after one warm-up):\n")
    print("| phase | seconds | share |\n|---|---:|---:|")
    other = r["time_scoring"] - r["reward_model"] - r["reference"]
    for name, sec in (("rollout (KV-cached sampling)", r["time_rollout"]), ("scoring", r["time_scoring"]),
                      ("- reward model", r["reward_model"]), ("- reference log-probs", r["reference"]),
                      ("- policy log-probs, values, advantages", other), ("training (PPO epochs)", r["time_training"])):
        print(f"| {name} | {sec:.2f} | {sec / r['total']:.0%} |")
    print(f"| **iteration** | **{r['total']:.2f}** | = {r['total'] / r['sft_step']:.1f} SFT steps |")
    print(f"| baseline: one SFT step (fwd + bwd) on the same tokens | {r['sft_step']:.2f} | |")


# ----------------------------------------------------------------------------------------------------------------
# DPO: ours vs TRL


def synthetic_pairs(cfg, vocab: int, seed: int = 0):
    """Token rows (ids, mask) for ``pairs`` chosen and rejected sequences of prompt_len + response_len tokens."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(2 * cfg.pairs):
        ids = torch.randint(0, vocab, (cfg.prompt_len + cfg.response_len,), generator=g).tolist()
        rows.append((ids, [0] * cfg.prompt_len + [1] * cfg.response_len))
    return rows[:cfg.pairs], rows[cfg.pairs:]


def dpo_gpt(cfg) -> GPT:
    """Our GPT at GPT-2's shape for the DPO bench: 6 layers, 6 heads, 384 wide, GPT-2's vocabulary, no dropout."""
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=cfg.prompt_len + cfg.response_len, vocab_size=padded_vocab(50257), n_layer=6,
                         n_head=6, n_embd=384, attn="sdpa"))


def bench_ours(cfg, dtype: str) -> dict:
    """Training steps of nanotrain's DPO as train_rlhf.py runs them: SequenceLogprob (output layer on the response
    positions only), the DPO loss against reference log-probs computed once before training, gradient clipping at 1
    and AdamW. The reference pass is timed on the same rows and reported beside the step."""
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else \
        (lambda: torch.autocast("cpu", enabled=False))
    model = dpo_gpt(cfg)
    opt = make_optimizer(model, 1e-5, 0.0)
    chosen, rejected = synthetic_pairs(cfg, 50257)
    rows = chosen + rejected
    reference_logprobs(model, rows, 0, batch_size=len(rows), autocast=autocast)  # warm-up
    t_ref, ref = timed(lambda: reference_logprobs(model, rows, 0, batch_size=len(rows), autocast=autocast))
    x, y = collate(rows, 0)
    B, logprob = cfg.pairs, SequenceLogprob(model)

    def step():
        with autocast():
            logp = logprob(x, y)
            loss, _ = preference_loss(logp[:B], logp[B:], ref[:B], ref[B:], beta=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()  # warm-up
    times = [timed(step)[0] for _ in range(cfg.dpo_steps)]
    t = statistics.mean(times)
    return {"impl": "nanotrain", "dtype": dtype, "settings": "reference precomputed", "pairs_per_s": B / t,
            "step_s": t, "ref_s_per_pair": t_ref / B, "pairs_per_s_with_ref": B / (t + t_ref),
            "threads": torch.get_num_threads(), "tokens": int(x.shape[1]) + 1}


def bench_trl(cfg, bf16: bool, like_for_like: bool) -> dict:
    """TRL's DPOTrainer on transformers' GPT2LMHeadModel of the same shape, batch and lengths.

    like_for_like: the reference log-probs precomputed (precompute_ref_log_probs, as ours) and no gradient
    checkpointing (TRL's default recomputes every block's forward in the backward pass to save memory, which this
    model does not need). Otherwise TRL's defaults: a reference model forward on every step, gradient checkpointing
    on. Both clip the gradient norm at 1 (TRL's default, as ours)."""
    import datasets
    import transformers
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback

    # An offline tokenizer in which every word "wN" is one token, so each text has exactly the intended length.
    vocab = {f"w{i}": i for i in range(50254)}
    vocab.update({"<unk>": 50254, "<pad>": 50255, "<eos>": 50256})
    core = HFTokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    g = torch.Generator().manual_seed(0)

    def words(n):
        return " ".join(f"w{i}" for i in torch.randint(0, 50254, (n,), generator=g).tolist())
    n = cfg.pairs * (cfg.dpo_steps + 1)
    # The response loses one token to the EOS TRL appends, so every sequence is prompt_len + response_len long; it
    # starts with a space because TRL tokenizes prompt + completion as one string.
    data = Dataset.from_list([{"prompt": words(cfg.prompt_len), "chosen": " " + words(cfg.response_len - 1),
                               "rejected": " " + words(cfg.response_len - 1)} for _ in range(n)])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=cfg.prompt_len + cfg.response_len,
                                       n_embd=384, n_layer=6, n_head=6))
    step_times, seen = [], {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            seen["threads"] = torch.get_num_threads()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_times.append(time.perf_counter() - self.t)

    class Trainer(trl.DPOTrainer):
        def _precompute_ref_logps(self, dataset, name, batch_size):  # timed: the counterpart of our reference pass
            t, out = timed(lambda: super(Trainer, self)._precompute_ref_logps(dataset, name, batch_size))
            seen["ref_s"] = t
            return out

    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference-pass progress bar reads only this
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # its checkpointing renames
    args = trl.DPOConfig(output_dir="/tmp/bench_rlhf_trl", per_device_train_batch_size=cfg.pairs,
                         max_steps=cfg.dpo_steps + 1, max_length=cfg.prompt_len + cfg.response_len,
                         learning_rate=1e-5, beta=0.1, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1000,
                         save_strategy="no", report_to=[], use_cpu=True, bf16=bf16, dataloader_num_workers=0,
                         seed=0, disable_tqdm=True, precompute_ref_log_probs=like_for_like,
                         gradient_checkpointing=not like_for_like)
    trainer = Trainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=data,
                      processing_class=tok, callbacks=[Clock()])
    trainer.remove_callback(transformers.PrinterCallback)  # its end-of-training metrics line
    lengths = {len(r["prompt_ids"]) + len(r[k]) for r in trainer.train_dataset for k in ("chosen_ids", "rejected_ids")}
    trainer.train()
    t = statistics.mean(step_times[1:])  # the first step is the warm-up
    res = {"impl": f"TRL {trl.__version__} (transformers {transformers.__version__})",
           "dtype": "bf16" if bf16 else "fp32", "pairs_per_s": cfg.pairs / t, "step_s": t, "threads": seen["threads"],
           "tokens": max(lengths),
           "settings": "reference precomputed, no gradient checkpointing" if like_for_like else
           "defaults: reference model run every step, gradient checkpointing"}
    if "ref_s" in seen:
        ref_s_per_pair = seen["ref_s"] / n
        res.update(ref_s_per_pair=ref_s_per_pair, pairs_per_s_with_ref=cfg.pairs / (t + cfg.pairs * ref_s_per_pair))
    return res


def bench_dpo(cfg) -> list[dict]:
    dtypes = ["fp32", "bf16"] if cfg.bf16 else ["fp32"]
    rows = [bench_ours(cfg, d) for d in dtypes]
    try:
        import trl  # noqa: F401
        import transformers  # noqa: F401
        import datasets  # noqa: F401
    except ImportError as e:
        print(f"TRL not installed ({e.name} missing): TRL column skipped "
              "(bench-only install: pip install trl transformers datasets)")
        return rows
    for d in dtypes:
        for like in (True, False):
            try:
                rows.append(bench_trl(cfg, bf16=d == "bf16", like_for_like=like))
            except Exception as e:  # bf16 on CPU depends on the versions; fp32 is the comparison that counts
                if d == "fp32":
                    raise
                print(f"TRL bf16 skipped: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    return rows


def print_dpo_table(cfg, rows):
    print(f"\nDPO training, GPT-2 6 layers x 384 (50257-token vocabulary), {cfg.pairs} pairs of "
          f"{cfg.prompt_len} + {cfg.response_len} tokens, {rows[0]['threads']} thread(s); mean of {cfg.dpo_steps} "
          "steps after one warm-up. 'with ref.': pairs/s counting the reference log-probs' one-time pass "
          "(one pass per pair per epoch):\n")
    print("| implementation | dtype | settings | threads | tokens/seq | pairs/s | s/step | ref. s/pair | "
          "pairs/s with ref. | ours vs this |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ours = next(o for o in rows if o["impl"] == "nanotrain" and o["dtype"] == r["dtype"])
        ref = f"{r['ref_s_per_pair']:.2f}" if "ref_s_per_pair" in r else "(in the step)"
        with_ref = r.get("pairs_per_s_with_ref", r["pairs_per_s"])
        vs = "" if r is ours else f"{ours['pairs_per_s'] / r['pairs_per_s']:.2f}x ({ours['pairs_per_s_with_ref'] / with_ref:.2f}x with ref.)"
        print(f"| {r['impl']} | {r['dtype']} | {r['settings']} | {r['threads']} | {r['tokens']} | "
              f"{r['pairs_per_s']:.2f} | {r['step_s']:.2f} | {ref} | {with_ref:.2f} | {vs} |")


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    from nanotrain.runtime import setup_runtime
    rt = setup_runtime("cpu", "auto", 0)
    results = {"threads": torch.get_num_threads()}
    if cfg.part in ("ppo", "all"):
        r = bench_ppo(cfg, rt)
        results["ppo"] = r
        print_ppo_table(cfg, r)
    if cfg.part in ("dpo", "all"):
        rows = bench_dpo(cfg)
        results["dpo"] = rows
        print_dpo_table(cfg, rows)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
