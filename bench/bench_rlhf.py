"""Bench: where a PPO iteration's time goes, and DPO training throughput beside TRL's DPOTrainer, in one run.

    python bench/bench_rlhf.py                       # both parts; prints two Markdown tables
    python bench/bench_rlhf.py --part dpo --dpo-steps 4

PPO: a few iterations of nanotrain.ppo.ppo_iteration on the pipeline's models (out/sft + out/rm_helpful, or random
"tiny" ones with a freshly trained BPE if those do not exist yet), timed in three phases: rollout (KV-cached sampling),
scoring (reward model, and the policy/reference/value passes that turn scores into advantages) and training (the PPO
epochs). Baseline measured in the same run: one supervised step (forward + backward + AdamW) of the policy on the same
rollout tokens, so "an iteration costs N SFT steps" holds across machines.

DPO: pairs per second of training steps for GPT-2 with 6 layers, 384 wide (50257-token vocabulary), 8 pairs per
step, each sequence 256 tokens (64 prompt + 192 response), random weights and tokens. Ours: nanotrain.dpo with the
reference log-probabilities computed once up front (their one-time cost is reported too, and an amortised figure that
includes it); in fp32 and in bf16 autocast. TRL: trl.DPOTrainer on transformers' GPT2LMHeadModel of the same size,
same batch and lengths, same threads, fp32 (and bf16 where it runs). TRL and transformers are a bench-only install;
without them that column is skipped with a message.
"""
from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nanotrain.cli import flag, parse_config
from nanotrain.dpo import collate, preference_loss, reference_logprobs, sequence_logprobs
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
    trl_bf16: bool = flag(True, "also time TRL with bf16=True")
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


def bench_ppo(cfg, rt) -> dict:
    from nanotrain.data import read_jsonl
    policy, reference, rm, tok, what = ppo_models(cfg, rt.device)
    ac = PolicyAndValue(policy, copy.deepcopy(rm))
    opt = make_optimizer(ac, 1e-6, 0.0, device_type=rt.device.type)
    pcfg = PPOConfig(rollout_batch=cfg.rollout_batch, max_new_tokens=cfg.max_new_tokens)
    prompts = [r["prompt"] for _, r in read_jsonl(cfg.prompts, required=("prompt",))]
    moments, g = RunningMoments(), torch.Generator().manual_seed(0)

    def score_fn(ro):
        return rm.score(ro.prompts, ro.texts, autocast=rt.autocast)

    phases = {"time_rollout": [], "time_scoring": [], "time_training": []}
    lengths, sft_steps = [], []
    for it in range(cfg.iterations + 1):
        batch = prompts[it * cfg.rollout_batch:(it + 1) * cfg.rollout_batch]
        ro, st = ppo_iteration(batch, ac, reference, tok, score_fn, opt, pcfg, 0.05, moments, g, rt)
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
    res.update(total=sum(res.values()), sft_step=statistics.mean(sft_steps), answer_tokens=statistics.mean(lengths),
               models=what, rollout_batch=cfg.rollout_batch, ppo_epochs=pcfg.ppo_epochs, minibatch=pcfg.minibatch)
    return res


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


def bench_ours(cfg, rt_autocast, label) -> dict:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=cfg.prompt_len + cfg.response_len, vocab_size=padded_vocab(50257), n_layer=6,
                          n_head=6, n_embd=384, attn="sdpa"))
    opt = make_optimizer(model, 1e-5, 0.0)
    chosen, rejected = synthetic_pairs(cfg, 50257)
    rows = chosen + rejected
    t_ref, ref = timed(lambda: reference_logprobs(model, rows, 0, batch_size=len(rows), autocast=rt_autocast))
    x, y = collate(rows, 0)
    B = cfg.pairs

    def step():
        with rt_autocast():
            logp = sequence_logprobs(model, x, y)
            loss, _ = preference_loss(logp[:B], logp[B:], ref[:B], ref[B:], beta=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()  # warm-up
    times = [timed(step)[0] for _ in range(cfg.dpo_steps)]
    t = statistics.mean(times)
    return {"impl": f"nanotrain ({label})", "pairs_per_s": B / t, "step_s": t, "ref_s_per_pair": t_ref / B,
            "pairs_per_s_with_ref": B / (t + t_ref)}


def bench_trl(cfg, bf16: bool) -> dict:
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
    # the response loses one token to the EOS TRL appends, so every sequence is prompt_len + response_len long
    data = Dataset.from_list([{"prompt": words(cfg.prompt_len), "chosen": words(cfg.response_len - 1),
                               "rejected": words(cfg.response_len - 1)} for _ in range(n)])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=cfg.prompt_len + cfg.response_len + 8,
                                       n_embd=384, n_layer=6, n_head=6))
    step_times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_times.append(time.perf_counter() - self.t)

    args = trl.DPOConfig(output_dir="/tmp/bench_rlhf_trl", per_device_train_batch_size=cfg.pairs,
                         max_steps=cfg.dpo_steps + 1, max_length=cfg.prompt_len + cfg.response_len,
                         learning_rate=1e-5, beta=0.1, logging_steps=1000, save_strategy="no", report_to=[],
                         use_cpu=True, bf16=bf16, dataloader_num_workers=0, seed=0)
    trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=data, processing_class=tok,
                             callbacks=[Clock()])
    trainer.train()
    t = statistics.mean(step_times[1:])
    return {"impl": f"TRL {trl.__version__} DPOTrainer ({'bf16' if bf16 else 'fp32'}; transformers "
                    f"{transformers.__version__})", "pairs_per_s": cfg.pairs / t, "step_s": t}


def bench_dpo(cfg) -> list[dict]:
    rows = [bench_ours(cfg, lambda: torch.autocast("cpu", enabled=False), "fp32"),
            bench_ours(cfg, lambda: torch.autocast("cpu", dtype=torch.bfloat16), "bf16 autocast")]
    try:
        import trl  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"TRL column skipped: {e.name} is not installed (pip install trl transformers datasets, bench-only)")
        return rows
    rows.append(bench_trl(cfg, bf16=False))
    if cfg.trl_bf16:
        try:
            rows.append(bench_trl(cfg, bf16=True))
        except Exception as e:  # bf16 on CPU depends on the versions; the fp32 row is the comparison that counts
            print(f"TRL bf16 skipped: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    return rows


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0])
    from nanotrain.runtime import setup_runtime
    rt = setup_runtime("cpu", "auto", 0)
    results = {"threads": torch.get_num_threads()}
    if cfg.part in ("ppo", "all"):
        r = bench_ppo(cfg, rt)
        results["ppo"] = r
        print(f"\nPPO iteration ({r['models']}; {r['rollout_batch']} prompts, {r['answer_tokens']:.0f} answer tokens "
              f"on average, {r['ppo_epochs']} epochs of minibatches of {r['minibatch']}; mean of {cfg.iterations}):\n")
        print("| phase | seconds | share |\n|---|---:|---:|")
        for k in ("time_rollout", "time_scoring", "time_training"):
            print(f"| {k.removeprefix('time_')} | {r[k]:.2f} | {r[k] / r['total']:.0%} |")
        print(f"| **iteration** | **{r['total']:.2f}** | = {r['total'] / r['sft_step']:.1f} SFT steps |")
        print(f"| baseline: one SFT step (fwd + bwd) on the same tokens | {r['sft_step']:.2f} | |")
    if cfg.part in ("dpo", "all"):
        rows = bench_dpo(cfg)
        results["dpo"] = rows
        print(f"\nDPO training, GPT-2 6 layers x 384, {cfg.pairs} pairs x {cfg.prompt_len + cfg.response_len} tokens, "
              f"{torch.get_num_threads()} threads (mean of {cfg.dpo_steps} steps after one warm-up):\n")
        print("| implementation | pairs/s | s/step | vs TRL fp32 |\n|---|---:|---:|---:|")
        base = next((r["pairs_per_s"] for r in rows if r["impl"].startswith("TRL") and "fp32" in r["impl"]), None)
        for r in rows:
            extra = (f" (reference pass, once: {r['ref_s_per_pair']:.2f} s/pair; counting it: "
                     f"{r['pairs_per_s_with_ref']:.2f} pairs/s)") if "ref_s_per_pair" in r else ""
            vs = f"{r['pairs_per_s'] / base:.1f}x" if base else "n/a"
            print(f"| {r['impl']}{extra} | {r['pairs_per_s']:.2f} | {r['step_s']:.2f} | {vs} |")
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
