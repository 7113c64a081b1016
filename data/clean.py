"""Clean raw web text for pretraining: extract, filter, decontaminate, deduplicate; write JSONL and a report.

Inputs are files or folders: .txt, JSONL(.gz) with a "text" field (other fields pass through to the output),
WARC(.gz) (HTML responses only) and .html. The steps, in order (see nanotrain/cleaning.py): HTML -> text without
the page chrome, content filter (blocklisted words and domains), Gopher's quality and repetition rules, test-set
decontamination (13-gram overlap), exact dedup of normalised text, MinHash near-duplicate dedup. Output: one JSON
record per line (``{"text", ...}``), and ``report.md`` beside it: documents per step, removals per rule with
examples, the largest duplicate clusters and every bad input line. Bad input (invalid UTF-8, a truncated gzip, a
malformed JSON line) is reported with file and line and the run goes on, unless --strict.

    python data/clean.py                                                    # the built-in world's crawl
    python data/clean.py --decontam data/tinyworld/eval_b.jsonl,data/tinyworld/eval_prompts.jsonl \
        --decontam-ngram 8 --decontam-question prompt                      # ... decontaminated as pipeline.py does
    python data/clean.py --input ../shared/data/web_cc_dolma --out out/clean_cc/clean.jsonl
    python data/clean.py --input ../shared/data/web_warc_dolma --out out/clean_warc/clean.jsonl --workers 2
    python data/clean.py --decontam ../shared/data/gsm8k/test.jsonl,../shared/data/hellaswag,../shared/data/mt_bench
    python data/clean.py --no-quality --no-content                          # dedup only
    python data/clean.py --prepare data/tinyworld/clean_tokens              # then tokenize the output
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nanotrain.cleaning import Decontaminator, Steps, clean
from nanotrain.cli import flag, parse_config
from nanotrain.errors import DataError, run_script
from nanotrain.quality import Blocklist, GopherRules

HERE = Path(__file__).resolve().parent


@dataclass
class CleanConfig:
    input: str = flag("data/tinyworld/crawl.warc.gz", "comma-separated files or folders (.txt, .jsonl, .jsonl.gz, "
                                                      ".warc, .warc.gz, .html)")
    out: str = flag("out/clean/clean.jsonl", "cleaned JSONL output; report.md is written in the same folder")
    txt_split: str = flag("file", "a .txt file is one document (file), or one per paragraph, or one per line")
    boilerplate: bool = flag(True, "HTML: drop the page chrome (navigation, header, footer, cookie banners, share "
                                   "bars, related links); --no-boilerplate keeps every visible text")
    content: bool = flag(True, "content filter: blocklisted words and URL domains")
    blocklist_words: str = flag("data/blocklist_words.txt", "word/phrase blocklist, one per line")
    blocklist_domains: str = flag("data/blocklist_domains.txt", "domain blocklist, one per line (subdomains too)")
    blocklist_min_hits: int = flag(1, "remove a document with at least this many blocklisted words")
    quality: bool = flag(True, "Gopher quality and repetition rules (Rae et al. 2021, A.1.1)")
    skip_rules: str = flag("", "comma-separated Gopher rules to switch off: " + ", ".join(GopherRules.rule_names()))
    decontam: str = flag("", "comma-separated evaluation files or folders (JSONL, JSON, CSV, text, .gz/.bz2); "
                             "empty: no decontamination")
    decontam_ngram: int = flag(13, "n-gram length (words) for test-set overlap")
    decontam_question: str = flag("", "JSON field of an evaluation item's question: only n-grams spanning it and "
                                      "the rest of the item count (a page quoting a question with its answer is "
                                      "contaminated, one quoting text a question quotes is not); empty: every "
                                      "n-gram of the item")
    decontam_mode: str = flag("remove", "remove contaminated documents, or flag them (field 'contaminated')")
    exact_dedup: bool = flag(True, "drop exact duplicates of normalised text")
    near_dedup: bool = flag(True, "drop MinHash near-duplicates")
    num_perm: int = flag(128, "MinHash permutations")
    threshold: float = flag(0.8, "Jaccard similarity at or above which two documents are near-duplicates")
    ngram: int = flag(5, "words per MinHash shingle")
    seed: int = flag(0, "seed of the MinHash permutations")
    workers: int = flag(1, "processes for the per-document steps and signatures")
    chunk_docs: int = flag(256, "documents per chunk handed to a worker")
    strict: bool = flag(False, "stop at the first bad input instead of reporting it and going on")
    prepare: str = flag("", "after cleaning, tokenize the output into this folder (data/prepare_pretrain.py)")
    progress: bool = flag(True, "show progress bars")


def _resource(path: str) -> str:
    """A relative default like data/blocklist_words.txt works from the repository root and from anywhere else."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return str(p)
    in_repo = HERE.parent / p
    return str(in_repo) if in_repo.exists() else str(p)


def build_steps(cfg: CleanConfig) -> Steps:
    skip = frozenset(filter(None, (s.strip() for s in cfg.skip_rules.split(","))))
    unknown = skip - set(GopherRules.rule_names())
    if unknown:
        raise DataError(f"--skip-rules: unknown rule(s) {sorted(unknown)}; "
                        f"known: {', '.join(GopherRules.rule_names())}")
    if cfg.decontam_mode not in ("remove", "flag"):
        raise DataError(f"--decontam-mode must be remove or flag, not {cfg.decontam_mode!r}")
    decontam_paths = [p.strip() for p in cfg.decontam.split(",") if p.strip()]
    return Steps(
        remove_boilerplate=cfg.boilerplate,
        blocklist=Blocklist.from_files(_resource(cfg.blocklist_words), _resource(cfg.blocklist_domains),
                                       cfg.blocklist_min_hits) if cfg.content else None,
        gopher=GopherRules(skip=skip) if cfg.quality else None,
        decontaminator=Decontaminator.from_paths(decontam_paths, cfg.decontam_ngram, question=cfg.decontam_question)
        if decontam_paths else None,
        decontam_mode=cfg.decontam_mode, exact_dedup=cfg.exact_dedup, near_dedup=cfg.near_dedup,
        num_perm=cfg.num_perm, threshold=cfg.threshold, ngram=cfg.ngram, seed=cfg.seed)


def main(argv=None):
    cfg = parse_config(CleanConfig, argv, description=__doc__.split("\n")[0])
    t0 = time.time()
    steps = build_steps(cfg)
    if steps.decontaminator is not None:
        d = steps.decontaminator
        print(f"decontamination: {len(d)} distinct {d.n}-grams from "
              + ", ".join(f"{name} ({d.items[name]} items)" for name in d.names))
    inputs = [p.strip() for p in cfg.input.split(",") if p.strip()]
    if inputs == ["data/tinyworld/crawl.warc.gz"] and not Path(inputs[0]).exists():
        raise FileNotFoundError(f"{inputs[0]}: no such file (make the built-in world with python data/tinyworld.py)")
    report = clean(inputs, cfg.out, steps, workers=cfg.workers, chunk_docs=cfg.chunk_docs, strict=cfg.strict,
                   txt_split=cfg.txt_split, progress=cfg.progress)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}
    md = report.to_markdown(settings=settings)
    report_path = Path(cfg.out).with_name("report.md")
    report_path.write_text(md, encoding="utf-8")
    # the per-step table on the terminal; everything else is in the report
    table = md[md.index("## Documents per step"):md.index("## Removed examples")]
    print(table.strip())
    print(f"\n{report.entered['extract']} documents in, {report.documents_out} out -> {cfg.out}; "
          f"report: {report_path}; {len(report.issues)} input problem(s); {time.time() - t0:.1f}s")
    if cfg.prepare:
        cmd = [sys.executable, str(HERE / "prepare_pretrain.py"), "--input", cfg.out, "--out", cfg.prepare]
        print("running:", " ".join(cmd))
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    run_script(main)
