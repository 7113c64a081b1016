"""Clean raw web text on Ray Data: the same per-document functions as data/clean.py, laid out for a cluster.

For a crawl past one machine. Every stage is a Ray Data operation, and the documents kept are exactly those
data/clean.py keeps (tests/test_clean_ray.py checks it on the shared samples):

1. read: one task per input file (nanotrain.extract.read_documents), each document numbered by
   (file, position), which is data/clean.py's order;
2. extract, filter, decontaminate, sign: ``map_batches`` over nanotrain.cleaning.process_chunk, the very function
   data/clean.py's workers run (HTML -> text, content filter, Gopher rules, 13-gram decontamination, the
   exact-dedup key, the MinHash signature);
3. exact dedup: a group-by on the key, keeping the earliest document of each group;
4. MinHash LSH: a shuffle on (band, band key) (nanotrain.minhash.MinHashLSH.band_keys); in each bucket the earliest
   document is paired with every other one (the star data/clean.py's index builds) and the pair is verified
   against the estimated Jaccard of the two signatures, which travel with the rows;
5. clusters: the connected components of the verified edges (union-find on the driver: there is one edge per
   near-duplicate, few next to the documents; past that, each large-star/small-star round of Kiveris et al. 2014
   is one more group-by), keeping the earliest document of each.

Output: the kept records as JSONL in input order, and the documents per step. ray is an optional install, imported
here only (the library never imports it): pip install "ray[data]". Without --address, Ray starts on this machine
with --workers CPUs.

    python data/clean_ray.py --input ../shared/data/web_warc_dolma,../shared/data/web_cc_dolma \\
        --out out/clean_ray/clean.jsonl --workers 2
    python data/clean_ray.py --address auto ...           # an existing Ray cluster
"""
from __future__ import annotations

import json
import logging
import runpy
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import nanotrain
from nanotrain.cleaning import STEPS, Steps, process_chunk
from nanotrain.cli import flag, parse_config
from nanotrain.errors import NanotrainError, run_script
from nanotrain.extract import Doc, input_files, read_documents
from nanotrain.minhash import MinHashLSH, UnionFind, jaccard_estimate

HERE = Path(__file__).resolve().parent
CLEAN = runpy.run_path(str(HERE / "clean.py"), run_name="clean")  # data/clean.py's flags and steps, not copied


@dataclass
class RayCleanConfig(CLEAN["CleanConfig"]):
    address: str = flag("", "Ray cluster address (auto: the running one); empty: start Ray here")
    blocks: int = flag(0, "blocks the documents are spread over (0: 2 per worker CPU)")


def read_file(row: dict, txt_split: str, strict: bool) -> list[dict]:
    """The documents of one input file as rows, and its bad input as rows with an "issue" (file and line)."""
    issues, rows = [], []
    for pos, doc in enumerate(read_documents([row["path"]], issues, strict=strict, txt_split=txt_split)):
        rows.append({"order": (row["file"] << 32) | pos, "origin": doc.origin, "issue": "",
                     "record": json.dumps(doc.record, ensure_ascii=False), "html": doc.html or "",
                     "is_html": doc.html is not None})
    return rows + [{"order": -1, "origin": "", "issue": str(i), "record": "", "html": "", "is_html": False}
                   for i in issues]


def process_batch(batch: dict, steps: Steps) -> dict:
    """nanotrain.cleaning.process_chunk on a batch of rows: the per-document steps and the dedup keys."""
    docs = [Doc(json.loads(r), o, h if is_html else None)
            for r, o, h, is_html in zip(batch["record"], batch["origin"], batch["html"], batch["is_html"])]
    outcomes = process_chunk(docs, steps)
    num_perm = steps.num_perm if steps.near_dedup else 1
    empty = np.zeros(num_perm, dtype=np.uint32)
    return {"order": batch["order"], "origin": batch["origin"],
            "record": np.array([json.dumps(d.record, ensure_ascii=False) for d in docs], dtype=object),
            "step": np.array([o.step or "" for o in outcomes], dtype=object),
            "rule": np.array([o.reason.rule if o.reason else "" for o in outcomes], dtype=object),
            "key": np.array([o.key.hex() for o in outcomes], dtype=object),
            "signature": np.stack([o.signature if o.signature is not None else empty for o in outcomes])}


def earliest_of_group(group: dict) -> dict:
    """Exact dedup of one group of equal keys: the earliest document stays (dup_of -1), the others point at it."""
    first = int(group["order"].min())
    return {**group, "dup_of": np.where(group["order"] == first, -1, first)}


def band_rows(batch: dict, lsh: MinHashLSH) -> dict:
    """One row per (document, band) with a non-empty band key: the shuffle key and what verification needs."""
    keys = lsh.band_keys(batch["signature"])
    doc, band = np.nonzero(keys)  # key 0: a document without shingles, which is nobody's candidate
    return {"band": band.astype(np.int64), "band_key": keys[doc, band], "order": batch["order"][doc],
            "signature": batch["signature"][doc]}


def bucket_edges(bucket: dict) -> dict:
    """Candidate pairs of one LSH bucket: its earliest document with each other one, with their estimated J."""
    first = int(np.argmin(bucket["order"]))
    others = np.flatnonzero(np.arange(len(bucket["order"])) != first)
    est = jaccard_estimate(bucket["signature"][first][None, :], bucket["signature"][others]) if len(others) \
        else np.zeros(0)
    return {"a": np.full(len(others), bucket["order"][first], dtype=np.int64), "b": bucket["order"][others],
            "est": np.asarray(est, dtype=np.float64)}


def near_duplicates(edges: list[dict], threshold: float) -> tuple[dict[int, int], int, int]:
    """(removed document -> the kept one of its cluster, candidate pairs, verified pairs): the connected
    components of the verified edges, each kept by its earliest document."""
    pairs = {(int(e["a"]), int(e["b"])): float(e["est"]) for e in edges}  # one pair may share several bands
    verified = [p for p, est in pairs.items() if est >= threshold]
    nodes = sorted({n for p in verified for n in p})
    index = {n: i for i, n in enumerate(nodes)}  # ascending: the union-find root is the earliest document
    uf = UnionFind(len(nodes))
    for a, b in verified:
        uf.union(index[a], index[b])
    removed = {n: nodes[uf.find(i)] for i, n in enumerate(nodes) if uf.find(i) != i}
    return removed, len(pairs), len(verified)


def clean_on_ray(cfg, steps: Steps) -> dict:
    """Run the pipeline on the connected Ray cluster; write cfg.out; return the counts."""
    import ray.data
    from ray.data.expressions import col

    ray.data.DataContext.get_current().enable_progress_bars = cfg.progress
    logging.getLogger("ray.data").setLevel(logging.INFO if cfg.progress else logging.WARNING)
    files = input_files([p.strip() for p in cfg.input.split(",") if p.strip()])
    blocks = cfg.blocks or 2 * max(1, int(ray.available_resources().get("CPU", 1)))
    read = ray.data.from_items([{"file": i, "path": str(f)} for i, f in enumerate(files)]) \
        .flat_map(read_file, fn_kwargs={"txt_split": cfg.txt_split, "strict": cfg.strict}).materialize()
    issues = [r["issue"] for r in read.filter(expr=col("issue") != "").select_columns(["issue"]).take_all()]
    docs = read.filter(expr=col("issue") == "").repartition(blocks)
    done = docs.map_batches(process_batch, batch_size=cfg.chunk_docs, batch_format="numpy",
                            fn_kwargs={"steps": steps}).materialize()

    removed = Counter()  # (step, rule) -> documents
    for r in done.filter(expr=col("step") != "").groupby(["step", "rule"], num_partitions=blocks).count() \
            .take_all():
        removed[(r["step"], r["rule"])] = r["count()"]
    alive = done.filter(expr=col("step") == "")
    if steps.exact_dedup:
        grouped = alive.groupby("key", num_partitions=blocks).map_groups(earliest_of_group, batch_format="numpy")
        grouped = grouped.materialize()
        removed[("exact_dedup", "exact_duplicate")] = grouped.filter(expr=col("dup_of") >= 0).count()
        alive = grouped.filter(expr=col("dup_of") < 0)
    near, lsh_counts = {}, {}
    if steps.near_dedup:
        alive = alive.materialize()
        lsh = MinHashLSH(steps.threshold, steps.num_perm, steps.ngram, steps.seed)
        edges = alive.map_batches(band_rows, batch_format="numpy", fn_kwargs={"lsh": lsh}) \
            .groupby(["band", "band_key"], num_partitions=blocks).map_groups(bucket_edges, batch_format="numpy")
        near, candidates, verified = near_duplicates(edges.take_all(), steps.threshold)
        removed[("near_dedup", "near_duplicate")] = len(near)
        lsh_counts = {"bands": lsh.bands, "rows": lsh.rows, "candidate pairs": candidates, "verified pairs": verified}
    kept = alive.filter(expr=~col("order").is_in(list(near))) if near else alive

    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, written = out.with_name(out.name + ".tmp"), 0
    with open(tmp, "w", encoding="utf-8") as f:
        for batch in kept.select_columns(["order", "record"]).sort("order").iter_batches(batch_format="numpy"):
            f.writelines(r + "\n" for r in batch["record"])
            written += len(batch["record"])
    tmp.replace(out)
    return {"documents": done.count(), "written": written, "removed": removed, "issues": issues, "lsh": lsh_counts}


def per_step_table(counts: dict, steps: list[str]) -> str:
    """Documents entering each step, removed by it and left, as data/clean.py prints them."""
    lines, n = ["| step | in | removed | out |", "|---|---:|---:|---:|"], counts["documents"]
    for step in steps:
        gone = sum(v for (s, _), v in counts["removed"].items() if s == step)
        lines.append(f"| {step} | {n} | {gone} | {n - gone} |")
        n -= gone
    return "\n".join(lines)


def main(argv=None):
    cfg = parse_config(RayCleanConfig, argv, description=__doc__.split("\n")[0])
    if cfg.prepare:
        raise NanotrainError(f"--prepare is data/clean.py's; tokenize the output with: python data/prepare_pretrain.py "
                             f"--input {cfg.out} --out {cfg.prepare}")
    import ray

    steps = CLEAN["build_steps"](cfg)
    t0 = time.time()
    # py_modules ships this nanotrain to every worker of the cluster, so all run the driver's code
    ray.init(address=cfg.address or None, num_cpus=None if cfg.address else cfg.workers, include_dashboard=False,
             log_to_driver=False, logging_level="ERROR", runtime_env={"py_modules": [nanotrain]})
    t1 = time.time()
    counts = clean_on_ray(cfg, steps)
    t2 = time.time()
    enabled = [s for s, on in zip(STEPS, (True, steps.blocklist is not None, steps.gopher is not None,
                                          steps.decontaminator is not None, steps.exact_dedup, steps.near_dedup)) if on]
    print(per_step_table(counts, enabled))
    for (step, rule), v in sorted(counts["removed"].items()):
        print(f"  {step} / {rule}: {v}")
    if counts["lsh"]:
        print("MinHash LSH: " + ", ".join(f"{k} {v}" for k, v in counts["lsh"].items()))
    for issue in counts["issues"]:
        print(f"input problem: {issue}")
    print(f"\n{counts['documents']} documents in, {counts['written']} out -> {cfg.out}; "
          f"{len(counts['issues'])} input problem(s); Ray start {t1 - t0:.1f}s, pipeline {t2 - t1:.1f}s "
          f"({counts['documents'] / (t2 - t1):.0f} documents/s)")


if __name__ == "__main__":
    run_script(main)
