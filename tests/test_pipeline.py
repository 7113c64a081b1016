"""pipeline.py: the real-data preset end to end at a tiny size on the samples in ../shared/data (every stage's real
path: Common Crawl WARC pages cleaned, then GPT-2's tokenizer, LIMA instructions, HH-RLHF pairs for the reward
model, DPO and PPO), and a second run that finds every stage up to date."""
import json
import subprocess
import sys

import torch

from conftest import ROOT, script


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


def test_every_stage_reads_the_world_files_it_depends_on_from_the_world_folder_given():
    """With --world elsewhere, a stage that depends on a file of that folder names the file in its command: the SFT
    stages once passed only --world, and train_sft.py read its conversations from its default data/tinyworld."""
    ns = script("pipeline.py")
    world = "elsewhere/tw"
    for stage in ns["tinyworld_stages"](ns["PipelineConfig"](world=world, out="o")):
        command = " ".join(stage.argv)
        for path in stage.inputs:
            if path.startswith(world + "/") and not path.startswith(world + "/tokens"):
                assert path in command or f"--world {world} " in command + " ", (stage.name, path)
        assert "data/tinyworld/" not in command, stage.name


def test_a_changed_world_file_makes_the_stages_that_read_it_stale():
    """A stage's inputs list the world files its script reads from --world (the gold scorers in world.json, the
    held-out prompts, the world's own pairs or prompts), so that a world regenerated with other PPO prompts
    (--rl-unknown) reruns PPO: the stage-3 stages once listed none of them and kept results of the old files."""
    ns = script("pipeline.py")
    w = "tw"
    stages = {st.name: set(st.inputs) for st in ns["tinyworld_stages"](ns["PipelineConfig"](world=w, out="o"))}
    for name in ("sft", "sft_scratch", "label", "rm_helpful", "rm_safe", "rlhf_ppo", "rlhf_dpo", "rlhf_kto"):
        assert f"{w}/world.json" in stages[name], name
    for name in ("sft", "rm_helpful", "rlhf_ppo", "rlhf_dpo", "rlhf_kto"):
        assert f"{w}/eval_prompts.jsonl" in stages[name] and f"{w}/eval_unknown.jsonl" in stages[name], name
    assert f"{w}/rl_prompts.jsonl" in stages["rlhf_ppo"]
    assert f"{w}/prefs_helpful_train.jsonl" in stages["rm_helpful"]
    for name in ("rm_safe", "rlhf_dpo", "rlhf_kto"):  # the red-team pairs
        assert f"{w}/prefs_safe_train.jsonl" in stages[name], name


def test_a_stamp_covers_the_library_modules_the_script_imports():
    """The stamp covers the nanotrain modules a script imports, also through another module: train_pretrain.py
    imports nanotrain.gpt, which imports nanotrain.flash_attention."""
    sources = {str(p.relative_to(ROOT)) for p in script("pipeline.py")["sources"](ROOT / "train_pretrain.py")}
    assert {"train_pretrain.py", "nanotrain/gpt.py", "nanotrain/flash_attention.py"} <= sources
    assert "nanotrain/ppo.py" not in sources and "nanotrain/tinyworld/world.py" not in sources


def test_the_staleness_check_reruns_a_stage_for_each_kind_of_change(tmp_path, monkeypatch):
    """A stage is up to date only while nothing it depends on has changed: one changed byte of an input, a changed
    argument, a changed line of a nanotrain module its script imports, a missing output, or a checkpoint whose run
    stopped before its configured steps (a rerun killed at step 3 leaves a readable ckpt.pt) each make it stale."""
    pipeline = script("pipeline.py")
    monkeypatch.setitem(pipeline["up_to_date"].__globals__, "ROOT", tmp_path)  # a repository of our own making
    (tmp_path / "nanotrain").mkdir()
    (tmp_path / "nanotrain" / "helper.py").write_text("X = 1\n")
    (tmp_path / "stage.py").write_text("from nanotrain import helper\n")
    (tmp_path / "in.txt").write_bytes(b"abc")
    (tmp_path / "out").mkdir()

    def checkpoint(step, steps=10):
        torch.save({"format": 1, "stage": "sft", "step": step, "train_config": {"steps": steps}},
                   tmp_path / "out" / "ckpt.pt")

    def stage(steps="10"):
        return pipeline["Stage"]("s", [sys.executable, "stage.py", "--steps", steps], ["in.txt"], ["out/ckpt.pt"],
                                 "out")

    checkpoint(10)
    (tmp_path / "out" / "stamp.json").write_text(json.dumps({"stamp": pipeline["stamp_of"](stage())}))
    fresh = lambda: pipeline["up_to_date"](stage())  # noqa: E731
    assert fresh()  # nothing changed

    (tmp_path / "in.txt").write_bytes(b"abd")
    assert not fresh()
    (tmp_path / "in.txt").write_bytes(b"abc")
    assert fresh()

    assert not pipeline["up_to_date"](stage(steps="11"))

    (tmp_path / "nanotrain" / "helper.py").write_text("X = 2\n")
    assert not fresh()
    (tmp_path / "nanotrain" / "helper.py").write_text("X = 1\n")
    assert fresh()

    (tmp_path / "out" / "ckpt.pt").unlink()
    assert not fresh()
    checkpoint(3)  # the stamp still matches, but the checkpoint says its run stopped at step 3 of 10
    assert not fresh()
    (tmp_path / "out" / "ckpt.pt").write_bytes(b"torn")  # unreadable: not a finished stage either
    assert not fresh()
    checkpoint(10)
    assert fresh()


def test_dtype_auto_keeps_the_first_runs_choice(tmp_path, monkeypatch):
    """--dtype auto is a timing: a second run into the same folder must not time again, or a busier machine could pick
    the other precision, change every stage's command and redo every stage that was up to date."""
    resolve = script("pipeline.py")["resolve_auto_dtype"]
    monkeypatch.setitem(resolve.__globals__, "auto_dtype", lambda device: "float32")
    assert resolve("cpu", tmp_path / "out")[0] == "float32"
    monkeypatch.setitem(resolve.__globals__, "auto_dtype", lambda device: "bfloat16")  # the timing now says bf16 ...
    assert resolve("cpu", tmp_path / "out")[0] == "float32"  # ... the first run's choice stands
    assert resolve("cuda", tmp_path / "out")[0] == "bfloat16"  # another device is timed afresh
    assert resolve("cpu", tmp_path / "elsewhere")[0] == "bfloat16"


def test_the_reward_models_start_from_the_sft_model_and_only_ppo_reads_them():
    """Both reward models start from the SFT model, whose answers they rank. Only PPO lists the reward models as
    inputs: DPO and KTO learn from the labels, and a new reward model leaves them up to date."""
    ns = script("pipeline.py")
    st = {s.name: s for s in ns["tinyworld_stages"](ns["PipelineConfig"](world="tw", out="o"))}
    for n in ("rm_helpful", "rm_safe"):
        argv = st[n].argv
        assert argv[argv.index("--init") + 1] == "o/sft/ckpt.pt" and "o/sft/ckpt.pt" in st[n].inputs
        assert list(st).index("sft") < list(st).index(n)
    rms = {"o/rm_helpful/ckpt.pt", "o/rm_safe/ckpt.pt"}
    assert rms <= set(st["rlhf_ppo"].inputs)
    assert not rms & set(st["rlhf_dpo"].inputs + st["rlhf_kto"].inputs)
