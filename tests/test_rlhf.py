"""train_rlhf.py end to end at a tiny size, per algorithm: PPO (full and LoRA with two reward models), DPO, IPO,
KTO and online DPO with both AI labelers. Each run must finish in seconds, write a plain-GPT "rlhf" checkpoint that
checkpoint.load_model reads, and store the final gold-judged evaluation in it."""
import json
import math
import re

import pytest
import torch

from conftest import script
from nanotrain.checkpoint import load_model
from nanotrain.errors import CheckpointError, ConfigError
from nanotrain.evaluate import win_rates
from nanotrain.pref_data import load_feedback, load_pairs

EVAL_KEYS = ("helpful_before", "helpful_after", "safe_before", "safe_after", "kl_to_ref", "win_rate",
             "refusal_harmful", "refusal_benign", "helpful_sampled_before", "helpful_sampled", "win_rate_sampled",
             "win_rate_harmful", "win_rate_all", "hallucination", "hallucination_sampled_before",
             "hallucination_sampled")


@pytest.fixture(scope="module")
def setup(tiny_chat):
    """A small world, a tokenizer trained on it, and random tiny 'sft' and 'rm' checkpoints (conftest.tiny_chat)."""
    return tiny_chat


def run(setup, algo, *extra):
    root, world = setup
    out = root / f"out_{algo}_{len(extra)}"
    data = {"ppo": "rl_prompts.jsonl", "kto": "feedback_train.jsonl",
            "dpo": "prefs_helpful_train.jsonl"}[algo]
    if algo == "dpo" and "--online-rounds" in extra:
        data = "rl_prompts.jsonl"
    argv = ["--algo", algo, "--init", str(root / "sft.pt"), "--reward", str(root / "rm_helpful.pt"), "--world",
            str(world), "--data", str(world / data), "--out", str(out), "--steps", "2", "--batch-size", "4",
            "--rollout-batch", "4", "--minibatch", "2", "--max-new-tokens", "8", "--eval-limit", "4",
            "--eval-tokens", "8", "--dtype", "float32", *extra]
    metrics = script("train_rlhf.py")["main"](argv)
    model, tok, ckpt = load_model(out / "ckpt.pt", stages=("rlhf",))  # a plain GPT, as sample.py / chat.py load it
    assert ckpt["algo"] == algo and ckpt["step"] == 2
    for k in EVAL_KEYS:
        assert k in ckpt["metrics"] and math.isfinite(ckpt["metrics"][k]), k
    assert 0 <= metrics["win_rate"] <= 1
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, recs, model


def test_ppo_end_to_end(setup):
    metrics, recs, _ = run(setup, "ppo")
    train = [r for r in recs if "score" in r]
    assert len(train) == 2
    for k in ("score", "gold", "kl", "entropy", "clipfrac", "approx_kl", "value_loss", "length", "time_rollout"):
        assert math.isfinite(train[0][k]), k
    assert abs(train[0]["kl"]) < 1e-4 and train[0]["ratio_first"] < 1e-4  # iteration 1: policy == reference


def test_ppo_lora_with_two_reward_models(setup):
    root, _ = setup
    _, recs, model = run(setup, "ppo", "--lora-rank", "2", "--safety-reward", str(root / "rm_safe.pt"))
    assert not any("lora" in k for k in model.state_dict())  # merged into plain weights
    assert abs(recs[0]["kl"]) < 1e-4  # adapter B = 0 at the start: the adapted policy is the reference


def test_ppo_refuses_float16_as_train_loop_does(setup):
    with pytest.raises(ConfigError, match="--dtype float16 cannot train"):
        run(setup, "ppo", "--dtype", "float16")


def test_dpo_ipo_and_kto_end_to_end(setup):
    """Each loss at its first step, where the policy is the reference (every log-ratio 0), against its closed form:
    DPO and cDPO -log sigma(0) = ln 2 whatever the smoothing; IPO (0 - 1/(2 tau))^2; KTO with both weights 1,
    1 - sigma(0) = 1/2 for every example. The default DPO adds nll_weight times the chosen replies' NLL (RPO)."""
    root, _ = setup
    plain = ("--nll-weight", "0", "--label-smoothing", "0")  # DPO eq. 7 alone: no NLL term (RPO), no cDPO
    ipo = ("--loss-type", "ipo", "--label-smoothing", "0", "--nll-weight", "0")
    for algo, extra in (("dpo", plain), ("dpo", ()), ("dpo", ipo), ("kto", ("--lambda-d", "1", "--lambda-u", "1"))):
        _, recs, _ = run(setup, algo, *extra)
        first = recs[0]
        cfg = torch.load(root / f"out_{algo}_{len(extra)}" / "ckpt.pt", weights_only=True)["train_config"]
        assert first["step"] == 1 and abs(first["reward_chosen"]) < 1e-5 and abs(first["reward_rejected"]) < 1e-5
        if algo == "kto":
            assert abs(first["loss"] - 0.5) < 1e-4 and abs(first["kl_ref_point"]) < 1e-5
            continue
        assert first["reward_accuracy"] == 0.0  # no chosen reply is ahead yet (ties count as not ahead)
        if extra == ipo:
            assert first["loss"] == pytest.approx((1 / (2 * cfg["beta"])) ** 2, rel=1e-4)
        elif extra == plain:
            assert abs(first["loss"] - math.log(2)) < 1e-4
        else:  # cDPO (smoothing 0.1) + RPO's NLL term: the SFT model's per-token NLL of the step's chosen replies
            assert cfg["label_smoothing"] > 0 and cfg["nll_weight"] > 0
            nll = first_batch_chosen_nll(setup, cfg)
            assert first["nll_chosen"] == pytest.approx(nll, rel=1e-4)
            assert first["loss"] == pytest.approx(math.log(2) + cfg["nll_weight"] * nll, rel=1e-4)


def first_batch_chosen_nll(setup, cfg) -> float:
    """Mean over step 1's pairs of the chosen reply's NLL per token, by the GPT's own cross-entropy (not the
    SequenceLogprob path DPO trains through)."""
    from nanotrain.data import batch_indices
    from nanotrain.dpo import render_response
    from nanotrain.pref_data import load_pairs

    root, world = setup
    sft, tok, _ = load_model(root / "sft.pt")
    pairs = load_pairs(world / "prefs_helpful_train.jsonl")
    fit = lambda p, reply: render_response(tok, p.messages, reply, sft.config.block_size + 1)  # noqa: E731
    rows = [fit(p, p.chosen) for p in pairs if fit(p, p.chosen) and fit(p, p.rejected)]  # the pairs that fit
    nll = []
    for i in batch_indices(len(rows), 0, 0, cfg["batch_size"], seed=cfg["seed"]):
        ids, mask = rows[i]
        targets = [t if m else -1 for t, m in zip(ids[1:], mask[1:])]
        with torch.no_grad():
            nll.append(sft(torch.tensor([ids[:-1]]), torch.tensor([targets]))[1].item())
    return sum(nll) / len(nll)


def test_dpo_and_kto_train_on_trls_conversational_files(setup):
    """The world's preference and feedback files rewritten in TRL's conversational form (prompt, chosen, rejected and
    completion as message lists) load to the same records and train step for step as the originals."""
    root, world = setup

    def said(role, text):
        return [{"role": role, "content": text}]

    files = {"dpo": ("prefs_helpful_train", lambda r: {"prompt": said("user", r["prompt"]),
                                                       "chosen": said("assistant", r["chosen"]),
                                                       "rejected": said("assistant", r["rejected"])}),
             "kto": ("feedback_train", lambda r: {"prompt": said("user", r["prompt"]),
                                                  "completion": said("assistant", r["completion"]),
                                                  "label": r["label"]})}
    for algo, (stem, to_trl) in files.items():
        original = world / f"{stem}.jsonl"
        trl = root / f"{stem}_trl.jsonl"
        trl.write_text("".join(json.dumps(to_trl(json.loads(ln))) + "\n" for ln in original.read_text().splitlines()))
        load = load_pairs if algo == "dpo" else load_feedback
        assert load(trl) == load(original) and len(load(trl)) > 10
        losses = []
        for data in (original, trl):
            out = root / f"trl_{algo}_{data.stem}"
            script("train_rlhf.py")["main"](["--algo", algo, "--init", str(root / "sft.pt"), "--data", str(data),
                                             "--world", str(world), "--out", str(out), "--steps", "2",
                                             "--batch-size", "4", "--eval-limit", "0", "--dtype", "float32"])
            losses.append([json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()])
            load_model(out / "ckpt.pt", stages=("rlhf",))
        assert losses[0] == losses[1] and len(losses[0]) == 2


def test_kto_weights_are_set_from_the_data_unless_given(setup, capsys):
    run(setup, "kto")
    n, n_d, ld, lu = re.search(r"(\d+) feedback examples \((\d+) desirable\).*lambda_D ([\d.]+), lambda_U ([\d.]+)",
                               capsys.readouterr().out).groups()
    ratio = int(n_d) / (int(n) - int(n_d))  # the KTO paper: lambda_D n_D / (lambda_U n_U) within [1, 4/3]
    want = (1 / ratio, 1.0) if ratio < 1 else (1.0, ratio) if ratio > 4 / 3 else (1.0, 1.0)
    assert (float(ld), float(lu)) == (pytest.approx(want[0], rel=1e-2), pytest.approx(want[1], rel=1e-2))
    run(setup, "kto", "--lambda-u", "0.5")  # as given: the rebalancing used to override it
    assert "lambda_D 1, lambda_U 0.5" in capsys.readouterr().out


def test_kto_on_the_labelling_stages_thumbs_also_reads_the_worlds_red_team_pairs(setup, tmp_path, capsys):
    root, world = setup
    labels = tmp_path / "labels"  # a labelling stage's folder: its thumbs are the world's, here
    labels.mkdir()
    (labels / "feedback_train.jsonl").write_text((world / "feedback_train.jsonl").read_text())
    red = load_pairs(world / "prefs_safe_train.jsonl")

    def examples(*extra):  # (examples, desirable ones) that KTO reads: those that fit the context
        script("train_rlhf.py")["main"](["--algo", "kto", "--init", str(root / "sft.pt"), "--world", str(world),
                                         "--labels", str(labels), "--out", str(tmp_path / "out"), "--steps", "1",
                                         "--batch-size", "2", "--eval-limit", "0", "--dtype", "float32", *extra])
        n, n_d = re.search(r"(\d+) feedback examples \((\d+) desirable\)", capsys.readouterr().out).groups()
        return int(n), int(n_d)

    n, n_d = examples("--red-team-pairs", "0")  # the labelling stage's thumbs alone
    assert examples("--red-team-pairs", "3") == (n + 6, n_d + 3)  # each pair: a thumbs up (chosen) and a down
    default = examples()  # 250 pairs (the tiny world has fewer; a few of their replies do not fit this context)
    assert len(red) > 3 and default == examples("--red-team-pairs", "250") and default[0] > n + 6
    assert examples("--data", str(labels / "feedback_train.jsonl")) == (n, n_d)  # your own data: none added


def test_win_rates_count_ties_half():
    # prompt by prompt: tie (both right), win, loss, tie (both wrong)
    w = win_rates([1.0, 0.0, 0.5, 0.0], [1.0, 1.0, 0.2, 0.0])
    assert w == dict(win_rate=0.5, win_rate_decisive=0.5, wins=0.25, ties=0.5, losses=0.25)
    assert win_rates([0.1, 0.1, 0.1], [0.9, 0.9, 0.0])["win_rate"] == pytest.approx(2 / 3)


def test_sampled_made_up_answers_are_counted_answer_by_answer(setup, monkeypatch):
    """evaluate_alignment's sampled made-up figure: every prompt answered --eval-samples times, each answer judged by
    gold.hallucinates. Sampling is replaced by hand-written answers, so the share is known: 3 of 6."""
    from types import SimpleNamespace

    from nanotrain import evaluate
    from nanotrain.tinyworld.gold import Gold

    _, world = setup
    gold = Gold.load(world)
    questions = [json.loads(ln)["prompt"] for ln in (world / "eval_unknown.jsonl").read_text().splitlines()[:3]]
    answers = iter(["I don't know; I only know about the people, pets and towns of Tinyworld.",  # admits
                    "They live in Ashford.",  # made up
                    "I'm sorry, but I can't help with that.",  # a refusal makes nothing up
                    "It is 12 years old.", "Hope this helps!",  # made up twice
                    "I don't know anyone called that in Tinyworld."])  # admits
    seen = []

    def sampled(policy, tok, prompts, max_new_tokens, temperature, generator, autocast):
        seen.extend(prompts)
        return SimpleNamespace(prompts=prompts, texts=[next(answers) for _ in prompts])

    monkeypatch.setattr(evaluate, "sample_rollouts", sampled)
    _, made_up = evaluate.sampled_figures(None, None, None, gold, questions, samples=2, max_new_tokens=8,
                                          temperature=1.0, seed=0, score=gold.hallucinates)
    assert seen == [q for q in questions for _ in range(2)]
    assert made_up == [False, True, False, True, True, False]


def test_online_dpo_with_reward_model_and_self_labels(setup):
    for labeler in ("rm", "self"):
        _, recs, _ = run(setup, "dpo", "--online-rounds", "2", "--online-samples", "3", "--labeler", labeler)
        rounds = [r["round"] for r in recs if "round" in r]
        assert rounds == [0, 1] and all(r["round_pairs"] >= 1 for r in recs if "round" in r)


def test_labelled_scoring_gives_the_combination_the_prompt_files_labels():
    """PPO and online DPO score with LLaMA 2's combination told which prompts are unsafe, when the file says."""
    from nanotrain.reward import CombinedReward, labelled
    seen = []

    class Judge(CombinedReward):
        def __init__(self):
            pass

        def score(self, prompts, responses, batch_size=64, autocast=None, unsafe=None):
            seen.append(None if unsafe is None else unsafe.tolist())
            return torch.zeros(len(prompts))

    prompts = ["How can I steal a hat?", [{"role": "user", "content": "Hello"}], "Where does Lena live?"]
    labelled(Judge(), prompts, [True, False, False], None)([prompts[2], prompts[0], prompts[1]], ["a"] * 3)
    labelled(Judge(), prompts, None, None)(prompts, ["a"] * 3)  # unlabelled: the combination's own probe
    assert seen == [[False, True, False], None]


def test_wrong_checkpoint_stage_is_one_clear_error(setup):
    root, world = setup
    with pytest.raises(CheckpointError, match="'rm' checkpoint"):
        script("train_rlhf.py")["main"](["--algo", "dpo", "--init", str(root / "rm_helpful.pt"), "--world",
                                         str(world), "--labels", str(world), "--out", str(root / "bad")])


def test_a_world_without_world_json_is_refused_and_world_none_has_no_red_team_pairs(setup, tmp_path):
    """It once skipped the gold-judged evaluation without a word; --world none still does so on purpose, but then
    there are no world pairs for KTO's --red-team-pairs."""
    root, world = setup
    argv = ["--algo", "ppo", "--init", str(root / "sft.pt"), "--reward", str(root / "rm_helpful.pt"), "--data",
            str(world / "rl_prompts.jsonl"), "--out", str(tmp_path / "out"), "--steps", "1", "--rollout-batch", "4",
            "--minibatch", "2", "--max-new-tokens", "4", "--dtype", "float32", "--curve-prompts", "0"]
    with pytest.raises(FileNotFoundError, match="world.json: no world here .* or pass --world none"):
        script("train_rlhf.py")["main"]([*argv, "--world", str(tmp_path)])
    # without the evaluation it is not needed (a GPT-2 run on real data with the default --world)
    assert "helpful_after" not in script("train_rlhf.py")["main"]([*argv, "--world", str(tmp_path), "--eval-limit", "0",
                                                                     "--out", str(tmp_path / "out0")])
    with pytest.raises(ConfigError, match="--max-new-tokens 500 leaves no room for the prompt .* context of"):
        script("train_rlhf.py")["main"]([*argv, "--world", "none", "--max-new-tokens", "500"])
    metrics = script("train_rlhf.py")["main"]([*argv, "--world", "none"])
    assert "helpful_after" not in metrics and (tmp_path / "out" / "ckpt.pt").exists()
    with pytest.raises(ConfigError, match="--red-team-pairs 5 reads the --world folder's safety pairs .* and --world "
                                          "is none"):  # it said "none/prefs_safe_train.jsonl: no such file"
        script("train_rlhf.py")["main"](["--algo", "kto", "--init", str(root / "sft.pt"), "--data",
                                         str(world / "feedback_train.jsonl"), "--world", "none", "--red-team-pairs",
                                         "5", "--out", str(tmp_path / "kto")])


def test_ppo_resumes_through_the_shared_checks(setup):
    """PPO's loop is not trainer.train_loop, but it claims --out, checks the flags and continues the clock through the
    same helpers: a resume with another --seed is refused, one with more --steps continues from the saved step."""
    root, world = setup
    out = root / "out_ppo_resume"
    argv = ["--algo", "ppo", "--init", str(root / "sft.pt"), "--reward", str(root / "rm_helpful.pt"), "--world",
            str(world), "--data", str(world / "rl_prompts.jsonl"), "--out", str(out), "--rollout-batch", "4",
            "--minibatch", "2", "--max-new-tokens", "8", "--eval-limit", "0", "--curve-prompts", "0", "--dtype",
            "float32"]
    first = script("train_rlhf.py")["main"]([*argv, "--steps", "2"])
    state = torch.load(out / "resume.pt", weights_only=True)
    assert state["step"] == 2 and state["dtype"] == "float32" and state["time_s"] == first["time_s"]
    with pytest.raises(CheckpointError, match="other flags \\(--seed 0 -> 3\\)"):
        script("train_rlhf.py")["main"]([*argv, "--steps", "3", "--resume", "--seed", "3"])
    again = script("train_rlhf.py")["main"]([*argv, "--steps", "3", "--resume"])
    assert again["step"] == 3 and again["time_s"] > first["time_s"]
    assert [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_flag_values_no_run_can_use_are_refused_in_one_sentence_before_anything_loads():
    """An unknown --algo, --preset, --labeler, --loss-type, --kl-estimator, --dtype or --device raised a plain
    ValueError, printed as a traceback (--loss-type and --kl-estimator only at the first step, after the models had
    loaded); a zero count, a rollout batch that splits a prompt's answers, PPO at temperature 0 and DPO at beta 0 failed
    later as ZeroDivisionError, an empty range or a NaN loss. The checkpoint named does not exist: the check comes
    first."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    cases = [(["--algo", "sft"], "--algo must be"), (["--preset", "gpt3"], "--preset must be"),
             (["--labeler", "human"], "--labeler must be"), (["--loss-type", "ppo"], "--loss-type must be"),
             (["--kl-estimator", "k2"], "--kl-estimator must be"), (["--dtype", "float16x"], "--dtype must be"),
             (["--device", "gpu"], "--device must be"), (["--minibatch", "0"], "--minibatch must be at least 1"),
             (["--grad-accum", "0"], "--grad-accum must be at least 1"),
             (["--samples-per-prompt", "3"], "--rollout-batch 32 must be a multiple of --samples-per-prompt 3"),
             (["--temperature", "0"], "--temperature must be above 0"),
             (["--online-samples", "1"], "--online-samples must be at least 2"),
             (["--algo", "dpo", "--beta", "0"], "--beta must be above 0 for dpo"),
             (["--device", "cuda:abc"], "--device must be")]
    if not torch.cuda.is_available():  # a RuntimeError from torch, later
        cases.append((["--device", "cuda"], "--device cuda: no such device is visible here"))
    for args, message in cases:
        r = subprocess.run([sys.executable, "train_rlhf.py", "--init", "no/such.pt", *args], cwd=root,
                           capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.startswith(f"error: {message}"), (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
