"""pipeline.py: the real-data preset end to end at a tiny size on the samples in ../shared/data (every stage's real
path: Common Crawl WARC pages cleaned, then GPT-2's tokenizer, LIMA instructions, HH-RLHF pairs for the reward
model, DPO and PPO), and a second run that finds every stage up to date."""
import json
import subprocess
import sys

import torch

from conftest import ROOT


def test_real_preset_runs_at_tiny_size_and_a_second_run_skips_everything(shared_data, tmp_path):
    out = tmp_path / "real"
    args = [sys.executable, "pipeline.py", "--preset", "real", "--tiny", "--out", str(out),
            "--pretrain-data", str(shared_data / "web_warc_dolma"),
            "--sft-data", str(shared_data / "lima" / "lima.json"),
            "--sft-val-data", str(shared_data / "dolly_sample" / "dolly_151.jsonl"),
            "--pref-data", str(shared_data / "hh_rlhf" / "helpful-base_test.jsonl.gz")]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for stage, kind in [("pretrain", "pretrain"), ("sft", "sft"), ("rm", "rm"), ("rlhf_dpo", "rlhf"),
                        ("rlhf_ppo", "rlhf")]:
        ck = torch.load(out / stage / "ckpt.pt", weights_only=True)
        assert ck["stage"] == kind and ck["tokenizer"]["name"] == "gpt2"
    meta = json.loads((out / "tokens" / "meta.json").read_text())  # the cleaned pages were tokenized
    assert meta["input"] == str(out / "clean" / "clean.jsonl") and (out / "clean" / "report.md").exists()
    assert meta["train_docs"] + meta["val_docs"] == len((out / "clean" / "clean.jsonl").read_text().splitlines())
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0
    assert again.stdout.count("up to date, skipped") == 8, again.stdout


def test_a_stamp_covers_the_library_modules_the_script_imports():
    """The stamp covers the nanotrain modules a script imports, also through another module: train_pretrain.py
    imports nanotrain.gpt, which imports nanotrain.flash_attention."""
    from conftest import script
    sources = {str(p.relative_to(ROOT)) for p in script("pipeline.py")["sources"](ROOT / "train_pretrain.py")}
    assert {"train_pretrain.py", "nanotrain/gpt.py", "nanotrain/flash_attention.py"} <= sources
    assert "nanotrain/ppo.py" not in sources and "nanotrain/tinyworld/world.py" not in sources
