"""The Ray Data path (data/clean_ray.py) keeps exactly the documents data/clean.py keeps, byte for byte: on the
shared WARC and Common Crawl samples together with planted copies across files (an exact copy before its
original, a near copy in another file, a copy of a copy), on a Ray instance started on this machine (Ray 2.x has
no local_mode any more). Skipped when ray is not installed (pip install "ray[data]")."""
import json

import pytest

from conftest import script
from nanotrain.cleaning import clean

ray = pytest.importorskip("ray")


def _page(i: int, n: int = 120) -> str:
    words = [f"{'abcdefghij'[i]}{chr(97 + k % 26)}{chr(97 + k // 26 % 26)}ing" for k in range(n)]
    return " ".join(f"the {w} of" if k % 5 == 0 else w for k, w in enumerate(words)) + "."


def test_ray_path_keeps_exactly_what_clean_keeps(tmp_path, shared_data):
    planted = tmp_path / "planted"
    planted.mkdir()
    near = _page(2).replace("the", "a", 1)
    (planted / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in
                                             [_page(1), near, _page(3)]) + '{"text": "broken\n')
    (planted / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in
                                             [_page(2), _page(1), _page(4), _page(3).upper()]))
    inputs = ",".join([str(shared_data / "web_warc_dolma"), str(shared_data / "web_cc_dolma"), str(planted)])
    ns = script("data/clean_ray.py")
    steps = ns["CLEAN"]["build_steps"](ns["RayCleanConfig"](input=inputs))
    want = clean(inputs.split(","), tmp_path / "clean" / "clean.jsonl", steps, progress=False)
    out = tmp_path / "ray" / "clean.jsonl"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"py_modules": [__import__("nanotrain")]})
    try:
        got = ns["clean_on_ray"](ns["RayCleanConfig"](input=inputs, out=str(out), progress=False), steps)
    finally:
        ray.shutdown()
    assert out.read_bytes() == (tmp_path / "clean" / "clean.jsonl").read_bytes()
    assert got["written"] == want.documents_out and got["documents"] == want.entered["extract"]
    for step, rules in want.removed.items():
        assert {r: got["removed"][(step, r)] for r in rules} == dict(rules)
    assert sum(got["removed"].values()) == sum(sum(c.values()) for c in want.removed.values())
    # the planted copies: page 1 and page 3 (upper case) exactly, page 2 nearly; the bad line is named
    assert want.removed["exact_dedup"]["exact_duplicate"] >= 2 and want.removed["near_dedup"]["near_duplicate"] >= 2
    assert got["issues"] == [str(i) for i in want.issues] and f"{planted / 'a.jsonl'}:4: malformed JSON" in \
        got["issues"][0]
