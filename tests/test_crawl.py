"""The built-in world's web crawl (nanotrain/tinyworld/web.py) on a small world: every pretraining document on
exactly one content page, junk kinds at their documented rates, the WARC read back with each page's true kind,
boilerplate gone after extraction and there without it, Chinese pages kept by the cleaning, and the pipeline's
tokenize stage reading what the clean stage wrote.

    pytest tests/test_crawl.py
"""
import gzip
import json
import os
import re
import subprocess
from collections import Counter

import pytest

from conftest import ROOT, script
from nanotrain.cleaning import Decontaminator, Steps, clean
from nanotrain.extract import html_to_text, read_documents
from nanotrain.quality import Blocklist, GopherRules, content_filter, gopher_quality
from nanotrain.tinyworld import web
from nanotrain.tinyworld.generate import CRAWL, write_world
from nanotrain.tinyworld.world import WorldConfig

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cfg = WorldConfig(out=str(tmp_path_factory.mktemp("crawl")), scale=0.05, people=60, animals=20, towns=8)
    files = write_world(cfg)
    return cfg, files


def _paragraphs(texts):
    return Counter(p for t in texts for p in t.split("\n\n"))


def test_every_document_is_on_exactly_one_content_page_and_extraction_gives_it_back(small):
    cfg, files = small
    content = [pg for pg in files["crawl"] if pg.kind in ("clean", "zh")]
    texts = [html_to_text(pg.html) for pg in content]
    # every paragraph of the pretraining text, as often as pretrain.jsonl has it: nothing lost, nothing added
    assert _paragraphs(texts) == _paragraphs(r["text"] for r in files["pretrain"])
    assert sorted(pg.page for pg in content) == list(range(len(content)))
    assert all((pg.kind == "zh") == bool(re.search("[\u4e00-\u9fff]", t)) for pg, t in zip(content, texts))


def test_junk_kinds_come_at_their_documented_rates(small):
    cfg, files = small
    pages = files["crawl"]
    kinds = Counter(pg.kind for pg in pages)
    n_content = kinds["clean"] + kinds["zh"]
    viral = max(2, round(web.VIRAL_RATE * n_content))  # (the small world has enough pages of VIRAL_MIN_WORDS)
    for kind, rate in web.JUNK_RATES.items():
        expected = max(1, round(rate * n_content * cfg.crawl_junk / 100)) + (viral * web.VIRAL_COPIES
                                                                              if kind == "exact_dup" else 0)
        assert kinds[kind] == expected, kind
    words = Blocklist.from_files(ROOT / "data" / "blocklist_words.txt")
    assert all(content_filter(html_to_text(pg.html), pg.url, words) for pg in pages if pg.kind == "blocklist")
    copies = Counter(pg.page for pg in pages if pg.kind == "exact_dup")
    assert sum(c >= web.VIRAL_COPIES for c in copies.values()) == viral  # the many-times mirrored pages
    # leaks: leak_share of the English non-harmful eval_b + eval_prompts questions, each on LEAK_COPIES pages, with
    # the oracle answer right after the question; the others appear on no page
    pool = [r for stem in ("eval_b", "eval_prompts") for r in files[stem] if r["lang"] == "en" and not r["harmful"]]
    leak_text = "\n".join(html_to_text(pg.html) for pg in pages if pg.kind == "eval_leak")
    leaked = [r for r in pool if f"{r['prompt']} {r['answer']}" in leak_text]
    assert len(leaked) == round(cfg.leak_share * len(pool)) and 0 < len(leaked) < len(pool)
    assert all(leak_text.count(f"{r['prompt']} {r['answer']}") == web.LEAK_COPIES for r in leaked)
    assert not any(r["prompt"] in leak_text for r in pool if r not in leaked)


def test_the_warc_reads_back_with_each_pages_true_kind(small):
    cfg, files = small
    issues, counts = [], {}
    docs = list(read_documents([f"{cfg.out}/{CRAWL}"], issues, warc_counts=counts))
    assert not issues and counts == {"records": len(files["crawl"]) + 1, "responses": len(files["crawl"]),
                                     "html": len(files["crawl"])}  # + the warcinfo record
    assert [(d.record["kind"], int(d.record["page"]), d.record["url"], d.html) for d in docs] == \
        [(pg.kind, pg.page, pg.url, pg.html) for pg in files["crawl"]]
    assert "kind" not in html_to_text(docs[0].html)  # the truth travels outside the text


def test_same_seed_gives_the_same_crawl_bytes(small, tmp_path):
    cfg, _ = small
    again = WorldConfig(out=str(tmp_path), scale=0.05, people=60, animals=20, towns=8)
    write_world(again)
    assert (tmp_path / CRAWL).read_bytes() == (ROOT / cfg.out / CRAWL).read_bytes()


def test_boilerplate_is_removed_by_extraction_and_kept_without_it(small):
    cfg, files = small
    has_marker = lambda t: any(m in t.lower() for m in web.BOILERPLATE_MARKERS)  # noqa: E731
    assert not any(has_marker(r["text"]) for r in files["pretrain"])  # the markers are chrome-only phrases
    content = [pg for pg in files["crawl"] if pg.kind in ("clean", "zh")]
    assert not any(has_marker(html_to_text(pg.html)) for pg in content)
    assert all(has_marker(html_to_text(pg.html, remove_boilerplate=False)) for pg in content)  # every page: a footer
    naive = html_to_text(content[0].html, remove_boilerplate=False)
    assert html_to_text(content[0].html) in naive and len(naive) > len(html_to_text(content[0].html))


def test_chinese_pages_survive_the_gopher_rules_and_the_whole_cleaning(small, tmp_path):
    cfg, files = small
    zh = [html_to_text(pg.html) for pg in files["crawl"] if pg.kind == "zh"]
    assert zh and all(gopher_quality(t, GopherRules()) is None for t in zh)
    steps = Steps(blocklist=Blocklist.from_files(ROOT / "data" / "blocklist_words.txt"),
                  decontaminator=Decontaminator.from_paths([f"{cfg.out}/{e}.jsonl" for e in web.EVAL_FILES],
                                                           web.DECONTAM_NGRAM, question=web.DECONTAM_QUESTION))
    rep = clean([f"{cfg.out}/{CRAWL}"], tmp_path / "clean.jsonl", steps, progress=False)
    records = [json.loads(line) for line in (tmp_path / "clean.jsonl").open()]
    kept = Counter(r["kind"] for r in records)
    assert set(zh) <= {r["text"] for r in records}  # (the copy dedup keeps may be a mirror that came first)
    scores = {s.step: s for s in rep.truth.steps}
    for step in ("content", "decontam", "exact_dedup"):  # every page these steps exist for, and nothing else
        assert scores[step].recall == 1.0 and scores[step].precision == 1.0, step
    assert scores["quality"].recall == 1.0 and scores["near_dedup"].recall > 0.9
    kept_kinds = {k for (k, step), n in rep.truth.confusion.items() if step == "kept" and n}  # (labels swapped)
    assert kept_kinds <= {"clean", "zh", "near_dup"} and sum(kept.values()) == rep.documents_out


def test_pipeline_tokenizes_what_the_clean_stage_wrote(small, tmp_path):
    cfg, _ = small
    pipeline = script("pipeline.py")
    stages = {s.name: s for s in pipeline["stages"](pipeline["PipelineConfig"](world=cfg.out, out=str(tmp_path)))}
    clean_out = stages["clean"].argv[stages["clean"].argv.index("--out") + 1]
    assert stages["clean"].argv[stages["clean"].argv.index("--input") + 1] == f"{cfg.out}/{CRAWL}"
    assert stages["tokenize"].argv[stages["tokenize"].argv.index("--input") + 1] == clean_out
    assert stages["tokenize"].inputs == [clean_out] and clean_out in stages["clean"].outputs
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # as pipeline.py runs its stages: this checkout's nanotrain
    for name in ("clean", "tokenize"):
        r = subprocess.run(stages[name].argv + ["--vocab-size", "512"] * (name == "tokenize"), cwd=ROOT, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((ROOT / cfg.out / "tokens" / "meta.json").read_text())
    records = (ROOT / clean_out).read_text().splitlines()
    assert meta["input"] == clean_out and meta["train_docs"] + meta["val_docs"] == len(records)
    assert not any(m in (ROOT / clean_out).read_text().lower() for m in web.BOILERPLATE_MARKERS)


def test_a_damaged_record_of_the_crawl_costs_that_page_only(small, tmp_path):
    """Bad input keeps its behaviour on the crawl: one gzip member (one page) damaged, the cleaner reports it with
    its line and goes on with every other page and its kind."""
    cfg, files = small
    data = (ROOT / cfg.out / CRAWL).read_bytes()
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\x1f\x8b\x08"]
    members = [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]
    assert len(members) == len(files["crawl"]) + 1 and gzip.decompress(members[5]).startswith(b"WARC/1.0")
    bad = bytearray(members[5])
    bad[len(bad) // 2:len(bad) // 2 + 8] = b"\xff" * 8  # deflate data of the 5th page
    (tmp_path / "bad.warc.gz").write_bytes(b"".join(members[:5]) + bytes(bad) + b"".join(members[6:]))
    rep = clean([str(tmp_path / "bad.warc.gz")], tmp_path / "clean.jsonl", Steps(gopher=None, exact_dedup=False,
                                                                                  near_dedup=False), progress=False)
    assert rep.entered["extract"] == len(files["crawl"]) - 1 and len(rep.issues) == 1
    assert "corrupt WARC record 6" in str(rep.issues[0]) and rep.warc["corrupt records skipped"] == 1
    kinds = Counter(json.loads(line)["kind"] for line in (tmp_path / "clean.jsonl").open())
    expected = Counter(pg.kind for i, pg in enumerate(files["crawl"]) if i != 4)
    assert kinds == expected
