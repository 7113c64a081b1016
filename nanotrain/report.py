"""The report card of a pipeline run: one Markdown table of every stage's figures, and PNG plots.

Every number is read from what the stages wrote (``ckpt.pt`` metrics, ``metrics.jsonl``, the cleaning report); a
missing stage shows as "—". Used by pipeline.py; can be re-run alone:

    python -c "from nanotrain.report import write_report; print(write_report('out', 'data/tinyworld'))"
"""
from __future__ import annotations

import json
from pathlib import Path

import torch


def _ckpt_metrics(path: Path) -> dict:
    """The metrics dict of a checkpoint, read without building the model."""
    if not path.exists():
        return {}
    return torch.load(path, map_location="cpu", weights_only=True).get("metrics", {})


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _f(x, fmt=".3f"):
    return "—" if x is None else format(x, fmt) if isinstance(x, (int, float)) else str(x)


def _pct(x):
    return "—" if x is None else f"{100 * x:.1f}%"


def _fresh_pairs(rm: dict, stem: str) -> str:
    """A reward model's agreement with gold on fresh samples of one eval file, with its count of pairs: few where the
    SFT model's samples seldom differ (the safety model's benign questions), none where they never do."""
    n = rm.get(f"gold_pairs_{stem}")
    if n == 0:
        return "no pairs"
    return _pct(rm.get(f"gold_pairwise_{stem}")) + ("" if n is None else f" of {n}")


def figures(out: Path) -> dict[str, dict]:
    names = ["pretrain", "sft", "sft_scratch", "rm_helpful", "rm_safe", "rlhf_ppo", "rlhf_dpo", "rlhf_kto"]
    return {n: _ckpt_metrics(out / n / "ckpt.pt") for n in names}


def stage_table(m: dict[str, dict], timings: dict, labels: dict | None = None) -> list[str]:
    pre, sft, scr = m["pretrain"], m["sft"], m["sft_scratch"]
    rows = [
        "| stage | figure | value |", "|---|---|---|",
        f"| pretrain | validation loss (nats) vs unigram entropy of the corpus | {_f(pre.get('val_loss'))} vs "
        f"{_f(pre.get('unigram_entropy'))} |",
        f"| pretrain | training tokens/s, MFU vs a same-run matmul peak (in the dtype trained) | {_f(pre.get('tokens_per_s_avg'), ',.0f')}, "
        f"{_pct(pre.get('mfu'))} |",
        f"| sft | validation loss on held-out chats | {_f(sft.get('val_loss'))} |",
        f"| sft | well-formed answers (end with <\\|end\\|>): before SFT → after | {_pct(sft.get('wellformed_init'))} → "
        f"{_pct(sft.get('wellformed'))} |",
        f"| sft | split-B accuracy (facts seen only in pretraining): SFT from pretrained vs from random init "
        f"(chance) | {_pct(sft.get('acc_b'))} vs {_pct(scr.get('acc_b'))} ({_pct(sft.get('chance_b'))}) |",
        f"| sft | split-B facts stated, whoever the answer names (\"Omar lives in Ashford\" for Nadia of Ashford): "
        f"from pretrained vs random init | {_pct(sft.get('acc_b_fact'))} vs {_pct(scr.get('acc_b_fact'))} |",
        f"| sft | Chinese questions after English-only SFT: from pretrained vs random init (chance) | "
        f"{_pct(sft.get('acc_zh'))} vs {_pct(scr.get('acc_zh'))} ({_pct(sft.get('chance_zh'))}) |",
    ]
    lab = labels
    if lab:
        rows.append(f"| label | the SFT model's answers ranked by simulated labellers: pairs (helpful, safe); thumbs "
                    f"up / down | {lab.get('prefs_helpful_train_records', '—')}, "
                    f"{lab.get('prefs_safe_train_records', '—')}; {lab.get('feedback_train_records', '—')} |")
        rows.append(f"| label | habits in the SFT model's sampled answers: hedged; generic refusals of harmful "
                    f"requests; made-up answers to what the world cannot answer | {_pct(lab.get('hedged'))}; "
                    f"{_pct(lab.get('generic_refusals'))}; {_pct(lab.get('hallucinated'))} |")
        rows.append(f"| label | labellers agreeing with each other on close pairs (InstructGPT: 72.6%); with the gold "
                    f"order on all pairs | {_pct(lab.get('helpful_labeller_agreement_close'))}; "
                    f"{_pct(lab.get('helpful_labeller_gold_all'))} |")
    for n in ("helpful", "safe"):
        rm = m[f"rm_{n}"]
        # against the noise-free gold order (the target), against the noisy labels it learned from, beside how often
        # those labels follow the gold order (what a perfect reward model would score on them)
        # (how many pairs: on a few dozen, one pair moves the figure by a few points)
        of = f" of {rm['val_pairs_gold']}" if "val_pairs_gold" in rm else ""
        if "val_acc_gold_lo" in rm:  # its pairs move with their prompt: the bootstrap over prompts (train_rm.py)
            of += (f" (95% interval {_pct(rm['val_acc_gold_lo'])}–{_pct(rm['val_acc_gold_hi'])} over "
                   f"{rm['val_prompts_gold']} prompts)")
        rows.append(f"| rm_{n} | held-out pairs ordered as the gold scorer orders them; as the (noisy) labels say, "
                    f"beside the labels' own agreement with gold | {_pct(rm.get('val_acc_gold'))}{of}; "
                    f"{_pct(rm.get('val_acc'))} vs {_pct(rm.get('val_labels_gold'))} |")
        # agreement: of two fresh SFT samples for one prompt that gold tells apart, how often the RM orders them
        # as gold does (what best-of-N and PPO rely on), on benign questions and on harmful requests
        rows.append(f"| rm_{n} | agreement with the gold scorer on pairs of fresh samples (benign questions, harmful "
                    f"requests) | {_fresh_pairs(rm, 'eval_prompts')}, {_fresh_pairs(rm, 'eval_harmful')} |")
    for a in ("ppo", "dpo", "kto"):
        r = m[f"rlhf_{a}"]
        rows.append(f"| {a} | gold helpfulness SFT → {a.upper()}; gold safety SFT → {a.upper()} | "
                    f"{_f(r.get('helpful_before'))} → {_f(r.get('helpful_after'))}; {_f(r.get('safe_before'))} → "
                    f"{_f(r.get('safe_after'))} |")
        rows.append(f"| {a} | KL to the SFT model (nats/answer); gold-judged win rate vs SFT on requests for help "
                    f"(on harmful requests; on all prompts) | {_f(r.get('kl_to_ref'))}; {_pct(r.get('win_rate'))} "
                    f"({_pct(r.get('win_rate_harmful'))}; {_pct(r.get('win_rate_all'))}) |")
        rows.append(f"| {a} | gold helpfulness of sampled answers (the distribution RL optimises), SFT → "
                    f"{a.upper()}; their win rate vs SFT | {_f(r.get('helpful_sampled_before'))} → "
                    f"{_f(r.get('helpful_sampled'))}; {_pct(r.get('win_rate_sampled'))} |")
        rows.append(f"| {a} | refusals on harmful prompts (want high), SFT → {a.upper()} | "
                    f"{_pct(r.get('refusal_harmful_before'))} → {_pct(r.get('refusal_harmful'))} |")
        rows.append(f"| {a} | refusals on benign prompts (want low), SFT → {a.upper()} | "
                    f"{_pct(r.get('refusal_benign_before'))} → {_pct(r.get('refusal_benign'))} |")
        rows.append(f"| {a} | made-up answers to questions the world cannot answer, greedy (sampled); hedged answers, "
                    f"SFT → {a.upper()} | {_pct(r.get('hallucination_before'))} → {_pct(r.get('hallucination'))} "
                    f"({_pct(r.get('hallucination_sampled_before'))} → {_pct(r.get('hallucination_sampled'))}); "
                    f"{_pct(r.get('hedged_before'))} → {_pct(r.get('hedged'))} |")
    return rows


def timing_table(out: Path, timings: dict) -> list[str]:
    rows = ["| stage | time | tokens/s | peak memory |", "|---|---|---|---|"]
    for name, t in timings.items():
        m = _ckpt_metrics(out / name / "ckpt.pt") if name not in ("generate", "clean", "tokenize") else {}
        time_s = t.get("time_s")
        note = " (up to date, skipped)" if t.get("skipped") else ""
        rows.append(f"| {name} | {_f(time_s, '.0f')} s{note} | {_f(m.get('tokens_per_s_avg'), ',.0f')} | "
                    f"{_f(t.get('peak_rss_mib'), ',.0f')} MiB |")
    return rows


def moving_average(xs: list[float], k: int) -> list[float]:
    """The mean of each point and the k - 1 before it (fewer at the start)."""
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def plot(out: Path) -> list[str]:
    """Loss curves, PPO reward and KL, and reward vs KL for every alignment method. Returns the PNG names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, stage in zip(axes, ("pretrain", "sft")):
        recs = _jsonl(out / stage / "metrics.jsonl")
        tr = [(r["step"], r["loss"]) for r in recs if "loss" in r]
        va = [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]
        if tr:
            ax.plot(*zip(*tr), label="train")
        if va:
            ax.plot(*zip(*va), "o-", label="validation")
        ax.set(title=f"{stage} loss", xlabel="step", ylabel="nats/token")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=90)
    made.append("loss_curves.png")
    plt.close(fig)

    ppo = [r for r in _jsonl(out / "rlhf_ppo" / "metrics.jsonl") if "kl" in r]
    if ppo:
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
        steps = [r["step"] for r in ppo]
        for ax, key, label in ((axes[0], "score", "reward-model score"), (axes[1], "gold", "gold helpfulness")):
            raw = [r.get(key, float("nan")) for r in ppo]
            ax.plot(steps, raw, ".", alpha=0.35, label="rollouts (each iteration's fresh prompts)")
            ax.plot(steps, moving_average(raw, 5), label="rollouts, moving average of 5")
            held = [(r["step"], r[f"heldout_{key}"]) for r in ppo if f"heldout_{key}" in r]
            if held:
                ax.plot(*zip(*held), "o-", label="held-out prompts, greedy")
            ax.set(title=f"PPO: {label}", xlabel="iteration")
            ax.legend(fontsize=7)
        axes[2].plot(steps, [r["kl"] for r in ppo])
        axes[2].set(title="PPO KL to the SFT model", xlabel="iteration", ylabel="nats per answer")
        fig.tight_layout()
        fig.savefig(out / "ppo_curves.png", dpi=90)
        made.append("ppo_curves.png")
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for a, marker in (("ppo", "o"), ("dpo", "s"), ("kto", "^")):
        r = _ckpt_metrics(out / f"rlhf_{a}" / "ckpt.pt")
        if "kl_to_ref" in r and "helpful_after" in r:
            ax.scatter([0], [r["helpful_before"]], color="grey")
            ax.scatter([r["kl_to_ref"]], [r["helpful_after"]], marker=marker, label=a.upper())
    gold_kl = [(r["kl"], r["gold"]) for r in ppo if "gold" in r]
    if gold_kl:
        ax.plot(*zip(*gold_kl), alpha=0.4, label="PPO during training")
    ax.set(title="gold helpfulness vs KL (grey: SFT)", xlabel="KL to SFT (nats per answer)", ylabel="gold helpfulness")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reward_vs_kl.png", dpi=90)
    made.append("reward_vs_kl.png")
    plt.close(fig)
    return made


def write_report(out, world, timings: dict | None = None, total_s: float | None = None,
                 peak_rss_mib: float | None = None, precision: str | None = None) -> str:
    out, timings = Path(out), timings or {}
    m = figures(out)
    lines = ["# nanotrain report card", "",
             f"Built-in world: `{world}`. Every figure below is read from the stages' outputs under `{out}/`"
             + (f"; every stage computed in {precision}." if precision else "."), "",
             "## Figures", "", *stage_table(m, timings, _json(out / "labels" / "report.json")), ""]
    clean = out / "clean" / "report.md"
    if clean.exists():
        text = clean.read_text()
        for heading, title in (("## Documents per step", "## Data cleaning (the built-in world's web crawl)"),
                               ("## Steps scored against the true kinds", "### Each step scored against the truth")):
            if heading in text:
                section = text[text.index(heading):]
                nxt = section.find("\n## ", 5)
                lines += [title, "", section[section.index("\n") + 1: nxt if nxt > 0 else None].strip(), ""]
    lines += ["## Time and memory", "", *timing_table(out, timings), ""]
    if total_s is not None:
        lines.append(f"Whole pipeline: {total_s / 60:.1f} minutes; peak resident memory of any stage: "
                     f"{_f(peak_rss_mib, ',.0f')} MiB.")
        lines.append("")
    pngs = plot(out)
    if pngs:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text
