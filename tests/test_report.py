"""The report card (nanotrain/report.py), built from a hand-made out/ folder: checkpoints holding only hand-written
metrics, the labelling stage's report.json, a cleaning report and the stage timings. Specific cells are checked
against the values written here, formatted by hand, so a misspelled metric key (which prints "—") fails; rows are
found by stage and figure, so rows added later do not break the test.

    pytest tests/test_report.py
"""
import json

import torch

from nanotrain.report import write_report

PRETRAIN = {"val_loss": 2.3456, "unigram_entropy": 5.6789, "tokens_per_s_avg": 12345.6, "mfu": 0.4123}
SFT = {"val_loss": 0.7071, "wellformed_init": 0.0, "wellformed": 0.975, "acc_b": 0.31, "chance_b": 0.0625,
       "acc_b_fact": 0.44, "acc_zh": 0.13, "chance_zh": 0.08}
SCRATCH = {"acc_b": 0.05, "acc_b_fact": 0.06, "acc_zh": 0.07}
RM = {"helpful": {"val_acc_gold": 0.912, "val_acc": 0.801, "val_labels_gold": 0.833,
                  "gold_pairwise_eval_prompts": 0.7, "gold_pairwise_eval_harmful": 0.65},
      "safe": {"val_acc_gold": 0.955, "val_acc": 0.9, "val_labels_gold": 0.921, "val_pairs_gold": 44,
               "val_acc_gold_lo": 0.85, "val_acc_gold_hi": 0.99, "val_prompts_gold": 12,
               "gold_pairwise_eval_prompts": float("nan"), "gold_pairs_eval_prompts": 0,  # samples that never differ
               "gold_pairwise_eval_harmful": 0.88, "gold_pairs_eval_harmful": 41}}
PPO = {"helpful_before": 0.512, "helpful_after": 0.634, "safe_before": 0.7, "safe_after": 0.81, "kl_to_ref": 1.25,
       "win_rate": 0.6, "win_rate_harmful": 0.375, "win_rate_all": 0.5625, "helpful_sampled_before": 0.4,
       "helpful_sampled": 0.45, "win_rate_sampled": 0.55,
       "refusal_harmful_before": 0.5, "refusal_harmful": 0.75, "refusal_benign_before": 0.1, "refusal_benign": 0.05,
       "hallucination_before": 0.3, "hallucination": 0.2, "hallucination_sampled_before": 0.55,
       "hallucination_sampled": 0.35, "hedged_before": 0.25, "hedged": 0.125}
LABELS = {"prefs_helpful_train_records": 1200, "prefs_safe_train_records": 800, "feedback_train_records": 2400,
          "hedged": 0.2, "generic_refusals": 0.1, "hallucinated": 0.3, "helpful_labeller_agreement_close": 0.7,
          "helpful_labeller_gold_all": 0.85}


def value(lines: list[str], stage: str, figure: str) -> str:
    """The value cell of the one row of ``stage`` whose figure text contains ``figure``."""
    rows = [ln for ln in lines if ln.startswith(f"| {stage} | ") and figure in ln]
    assert len(rows) == 1, (stage, figure, rows)
    return rows[0].rsplit(" | ", 1)[1].removesuffix(" |")


def test_the_report_card_shows_each_hand_made_figure_in_its_cell(tmp_path):
    out = tmp_path / "out"
    for stage, metrics in (("pretrain", PRETRAIN), ("sft", SFT), ("sft_scratch", SCRATCH),
                           ("rm_helpful", RM["helpful"]), ("rm_safe", RM["safe"]), ("rlhf_ppo", PPO),
                           ("rlhf_dpo", {**PPO, "kl_to_ref": 0.5})):  # no rlhf_kto: a stage that did not run
        (out / stage).mkdir(parents=True)
        torch.save({"format": 1, "stage": stage, "step": 1, "metrics": metrics}, out / stage / "ckpt.pt")
    for stage in ("pretrain", "sft"):  # loss curves for the plots
        (out / stage / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n'
                                                   '{"step": 2, "loss": 2.5, "val_loss": 2.4}\n')
    (out / "labels").mkdir()
    (out / "labels" / "report.json").write_text(json.dumps(LABELS))
    (out / "clean").mkdir()
    (out / "clean" / "report.md").write_text("# cleaning\n\n## Documents per step\n\n| step | docs |\n|---|---|\n"
                                             "| input | 480 |\n| dedup | 411 |\n\n## Removals\n\nnone\n")
    timings = {"pretrain": {"time_s": 61.4, "peak_rss_mib": 1234.4}, "sft": {"time_s": 9.6, "skipped": True}}
    text = write_report(out, "data/tinyworld", timings, total_s=126.0, peak_rss_mib=2048.0)
    assert (out / "report.md").read_text() == text
    lines = text.splitlines()

    assert value(lines, "pretrain", "validation loss") == "2.346 vs 5.679"
    assert value(lines, "pretrain", "tokens/s") == "12,346, 41.2%"
    assert value(lines, "sft", "validation loss") == "0.707"
    assert value(lines, "sft", "well-formed") == "0.0% → 97.5%"
    assert value(lines, "sft", "split-B accuracy") == "31.0% vs 5.0% (6.2%)"  # 6.25% rounds half to even
    assert value(lines, "sft", "split-B facts stated") == "44.0% vs 6.0%"
    assert value(lines, "sft", "Chinese") == "13.0% vs 7.0% (8.0%)"
    assert value(lines, "label", "pairs (helpful, safe)") == "1200, 800; 2400"
    assert value(lines, "label", "habits") == "20.0%; 10.0%; 30.0%"
    assert value(lines, "label", "agreeing") == "70.0%; 85.0%"
    assert value(lines, "rm_helpful", "held-out pairs") == "91.2%; 80.1% vs 83.3%"  # (no pair count: older run)
    assert value(lines, "rm_safe", "held-out pairs") == ("95.5% of 44 (95% interval 85.0%–99.0% over 12 prompts); "
                                                          "90.0% vs 92.1%")
    assert value(lines, "rm_safe", "fresh samples") == "no pairs, 88.0% of 41"
    assert value(lines, "rm_helpful", "fresh samples") == "70.0%, 65.0%"  # an older run: no pair counts
    assert value(lines, "ppo", "gold helpfulness SFT") == "0.512 → 0.634; 0.700 → 0.810"
    assert value(lines, "ppo", "KL to the SFT model") == "1.250; 60.0% (37.5%; 56.2%)"  # 56.25% rounds half to even
    assert value(lines, "dpo", "KL to the SFT model") == "0.500; 60.0% (37.5%; 56.2%)"
    assert value(lines, "ppo", "sampled answers") == "0.400 → 0.450; 55.0%"
    assert value(lines, "ppo", "harmful prompts") == "50.0% → 75.0%"
    assert value(lines, "ppo", "benign prompts") == "10.0% → 5.0%"
    assert value(lines, "ppo", "made-up answers") == "30.0% → 20.0% (55.0% → 35.0%); 25.0% → 12.5%"
    assert value(lines, "kto", "KL to the SFT model") == "—; — (—; —)"  # the stage that did not run

    assert "| input | 480 |" in text and "| dedup | 411 |" in text and "## Removals" not in text
    assert "| pretrain | 61 s | 12,346 | 1,234 MiB |" in lines
    assert "| sft | 10 s (up to date, skipped) | — | — MiB |" in lines
    assert "Whole pipeline: 2.1 minutes; peak resident memory of any stage: 2,048 MiB." in lines
    assert "![loss_curves.png](loss_curves.png)" in lines and (out / "loss_curves.png").stat().st_size > 0
