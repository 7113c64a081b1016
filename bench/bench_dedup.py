"""Near-duplicate detection: nanotrain.minhash against datasketch, on real web text with planted near-duplicates.

Corpus: real documents from ../shared/data (the Common Crawl pages of web_cc_dolma, the HTML pages of
web_warc_dolma extracted with nanotrain.extract, the WikiText-2 test articles) cut into documents of 40-300 words;
then 40% of them get 1-3 planted copies each: close ones (up to 1.5% of the words replaced, deleted or inserted;
a line of boilerplate before and after; the last 2-15% cut off) and far ones (4-15% of the words edited). The
truth is the *exact* Jaccard similarity of the 5-word shingle sets of every pair of documents that share a shingle
(an inverted index over plain Python sets), real duplicates in the web text included. A pair is a near-duplicate
when J >= --threshold.

Both methods use the same shingles (nanotrain.minhash.reference_shingles defines them; datasketch is fed exactly
those byte strings), the same num_perm, the same LSH (bands, rows), and the same protocol: LSH candidates are kept
when their estimated Jaccard reaches the threshold, and union-find joins them.
- precision: the fraction of the pairs a method reports whose exact J >= threshold;
- recall: the fraction of pairs with exact J >= threshold that end up in one cluster (so one of them is removed).
Speed is documents per second from text to clusters, one process each (datasketch: building the shingle sets,
MinHash, LSH query + insert, verification; its rate when handed the shingle sets is printed too), best of
--repeats runs taken in turns in this same process. Then a --scale-docs corpus (windows of the same text with 30% of
the words replaced) measures the peak memory each method adds, each in a fresh process.

    pip install datasketch                     # bench-only baseline; without it its columns are skipped
    python bench/bench_dedup.py                # ~1-3 minutes on a laptop CPU
    python bench/bench_dedup.py --scale-docs 20000 --no-baseline-scale
"""
from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nanotrain.cli import flag, parse_config
from nanotrain.extract import html_to_text, warc_html_pages
from nanotrain.minhash import FN_WEIGHT, MinHashLSH, UnionFind, reference_shingles

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class BenchConfig:
    data: str = flag(str(SHARED), "the shared/data folder")
    num_perm: int = flag(128, "MinHash permutations (both methods)")
    threshold: float = flag(0.8, "Jaccard threshold of a near-duplicate")
    ngram: int = flag(5, "words per shingle")
    planted: float = flag(0.4, "fraction of base documents that get planted copies")
    fn_weight: float = flag(FN_WEIGHT, "weight of LSH misses when choosing (bands, rows); see nanotrain.minhash")
    repeats: int = flag(5, "timed runs per method, taken in turns (the best of each is reported)")
    scale_docs: int = flag(100_000, "documents in the throughput/memory corpus (0: skip)")
    baseline_scale: bool = flag(True, "also measure datasketch on the scale corpus (slow)")
    seed: int = flag(0, "corpus seed")
    memory_child: str = flag("", "internal: run one method on the scale corpus and print its memory")

    bands_rows = (0, 0)  # set in main(), not a flag


# ---------------------------------------------------------------------------------------------------------------
# Corpus


def real_texts(data: Path) -> list[str]:
    texts = [json.loads(line)["text"] for line in open(data / "web_cc_dolma" / "cc_licensed_pages.jsonl")]
    for warc in sorted((data / "web_warc_dolma").glob("*.warc.gz")):
        texts += [html_to_text(html) for _, html in warc_html_pages(warc)]
    wiki = (data / "wikitext2_raw" / "wiki.test.raw").read_text(encoding="utf-8")
    texts += re.split(r"\n = [^=\n].* = \n", wiki)  # one piece per article
    return texts


def base_documents(texts: list[str], rng) -> list[str]:
    docs = []
    for text in texts:
        words = text.split()
        i = 0
        while i + 40 <= len(words):
            n = int(rng.integers(40, 301))
            docs.append(" ".join(words[i:i + n]))
            i += n
    return docs


def edit(words: list[str], rng, vocab: list[str], rate: float) -> list[str]:
    """Replace, delete or insert about rate * len(words) words at random places."""
    out = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        pos = int(rng.integers(0, len(out)))
        kind = rng.integers(0, 3)
        if kind == 0:
            out[pos] = vocab[rng.integers(0, len(vocab))]
        elif kind == 1 and len(out) > 10:
            del out[pos]
        else:
            out.insert(pos, vocab[rng.integers(0, len(vocab))])
    return out


CLOSE = (0.015, 0.85)  # close copies: up to 1.5% of the words edited, or at least 85% of the text kept
FAR = (0.04, 0.15)     # far copies: 4% to 15% of the words edited
BOILERPLATE = ["Share this: Facebook Twitter Email", "Posted on March 3, 2019 by admin", "Read more »",
               "Subscribe to our newsletter for updates", "All rights reserved."]


def plant(docs: list[str], rng, fraction: float) -> list[str]:
    """Base documents plus planted copies placed at random positions."""
    vocab = [w for d in docs[:500] for w in d.split()]
    out = list(docs)
    for d in rng.choice(len(docs), int(fraction * len(docs)), replace=False):
        words = docs[d].split()
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.random()
            if kind < 0.45:    # close: a few edits
                copy = edit(words, rng, vocab, float(rng.uniform(0.0, CLOSE[0])))
            elif kind < 0.6:   # close: boilerplate around it
                copy = BOILERPLATE[rng.integers(0, 5)].split() + words + BOILERPLATE[rng.integers(0, 5)].split()
            elif kind < 0.75:  # close: the end cut off
                copy = words[:max(5, int(len(words) * rng.uniform(CLOSE[1], 0.98)))]
            else:              # far: many edits
                copy = edit(words, rng, vocab, float(rng.uniform(FAR[0], FAR[1])))
            out.insert(int(rng.integers(0, len(out) + 1)), " ".join(copy))
    return out


def exact_pairs(shingle_sets: list[set], threshold: float) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair sharing a shingle (inverted index); returns the pairs at or above threshold."""
    postings = defaultdict(list)
    for d, s in enumerate(shingle_sets):
        for sh in s:
            postings[sh].append(d)
    shared = defaultdict(int)
    for docs in postings.values():
        for i in range(len(docs)):
            for j in range(i + 1, len(docs)):
                shared[docs[i], docs[j]] += 1
    out = {}
    for (i, j), inter in shared.items():
        jac = inter / (len(shingle_sets[i]) + len(shingle_sets[j]) - inter)
        if jac >= threshold:
            out[i, j] = jac
    return out


def exact_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


# ---------------------------------------------------------------------------------------------------------------
# The two methods: texts -> reported pairs (i < j) and a cluster root per document


def run_nanotrain(texts, cfg, bands, rows, chunk=512):
    lsh = MinHashLSH(cfg.threshold, cfg.num_perm, cfg.ngram, seed=1, bands=bands, rows=rows)
    for i in range(0, len(texts), chunk):
        lsh.add(lsh.signatures(texts[i:i + chunk]))
    result = lsh.clusters()
    return [tuple(p) for p in result.pairs.tolist()], result.root, lsh


def run_datasketch(texts, cfg, bands, rows, shingles=None):
    from datasketch import MinHash, MinHashLSH as DSLSH
    if shingles is None:  # streamed, one document at a time, as in a real run
        shingles = (reference_shingles(t, cfg.ngram) for t in texts)
    lsh = DSLSH(num_perm=cfg.num_perm, params=(bands, rows))
    pairs, minhashes = [], []
    uf = UnionFind(len(texts))
    for i, m in enumerate(MinHash.generator(shingles, num_perm=cfg.num_perm, seed=1)):
        minhashes.append(m)
        if m.is_empty():  # as in nanotrain: a document without shingles is never a candidate
            continue
        for j in lsh.query(m):
            if m.jaccard(minhashes[j]) >= cfg.threshold:
                pairs.append((j, i))
                uf.union(j, i)
        lsh.insert(i, m)
    return pairs, np.array([uf.find(i) for i in range(len(texts))]), lsh


def quality(pairs, root, truth: dict, sets) -> tuple[float, float, int]:
    """(precision of the reported pairs, recall of the true pairs by cluster, number of reported pairs)."""
    good = sum(1 for i, j in pairs if exact_jaccard(sets[i], sets[j]) >= THRESHOLD[0])
    found = sum(1 for i, j in truth if root[i] == root[j])
    return good / max(len(pairs), 1), found / max(len(truth), 1), len(pairs)


THRESHOLD = [0.8]


def timed(fn) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def scale_corpus(texts: list[str], n: int, seed: int) -> list[str]:
    """n windows of 40-300 words of the real text with 30% of their words replaced: mostly distinct documents."""
    rng = np.random.default_rng(seed)
    words = " ".join(texts).split()
    out = []
    for _ in range(n):
        length = int(rng.integers(40, 301))
        start = int(rng.integers(0, len(words) - length))
        w = words[start:start + length]
        for pos in rng.choice(length, int(0.3 * length), replace=False):
            w[pos] = words[rng.integers(0, len(words))]
        out.append(" ".join(w))
    return out


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def memory_child(cfg: BenchConfig, method: str) -> None:
    """Run one method on the scale corpus and print the growth of its peak resident memory: the high-water mark is
    reset (/proc/self/clear_refs) after the corpus is built, so only the index and the work are counted."""
    texts = scale_corpus(real_texts(Path(cfg.data)), cfg.scale_docs, cfg.seed + 1)
    bands, rows = cfg.bands_rows
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status("VmRSS")
    t = timed(lambda: (run_nanotrain if method == "nanotrain" else run_datasketch)(texts, cfg, bands, rows))
    print(json.dumps({"peak_mib": (_status("VmHWM") - before) / 2**20, "seconds": t, "docs": len(texts)}))


def measure_memory(cfg: BenchConfig, method: str) -> dict | None:
    cmd = [sys.executable, __file__, "--memory-child", method]
    for k, v in asdict(cfg).items():
        name = k.replace("_", "-")
        if k != "memory_child":
            cmd += [f"--{name}" if v else f"--no-{name}"] if isinstance(v, bool) else [f"--{name}={v}"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        print(f"({method} memory run failed: {run.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None):
    cfg = parse_config(BenchConfig, argv, description=__doc__.split("\n")[0])
    THRESHOLD[0] = cfg.threshold
    lsh0 = MinHashLSH(cfg.threshold, cfg.num_perm, cfg.ngram, fn_weight=cfg.fn_weight)
    cfg.bands_rows = (lsh0.bands, lsh0.rows)
    if cfg.memory_child:
        return memory_child(cfg, cfg.memory_child)
    try:
        import datasketch
        ds_version = datasketch.__version__
    except ImportError:
        ds_version = None
        print("datasketch is not installed: its columns are skipped (pip install datasketch)")
    data = Path(cfg.data)
    if not data.is_dir():
        raise SystemExit(f"{data}: no such folder (the bench needs ../shared/data)")
    rng = np.random.default_rng(cfg.seed)
    texts = plant(base_documents(real_texts(data), rng), rng, cfg.planted)
    sets = [reference_shingles(t, cfg.ngram) for t in texts]
    truth = exact_pairs(sets, cfg.threshold)
    bands, rows = cfg.bands_rows
    print(f"corpus: {len(texts)} documents, {sum(len(t.split()) for t in texts)} words, {sum(map(len, sets))} "
          f"shingles; {len(truth)} pairs with exact J >= {cfg.threshold}")
    print(f"num_perm={cfg.num_perm}, {cfg.ngram}-word shingles, LSH bands={bands} rows={rows} (both methods)\n")

    pairs, root, _ = run_nanotrain(texts, cfg, bands, rows)
    results = {"nanotrain": quality(pairs, root, truth, sets)}
    roots = {"nanotrain": root}
    if ds_version:
        pairs_ds, roots["datasketch"], _ = run_datasketch(texts, cfg, bands, rows)
        results["datasketch"] = quality(pairs_ds, roots["datasketch"], truth, sets)
    # Timing: the methods take turns, so a busy moment of a shared machine hits both; the best run of each counts.
    times = defaultdict(list)
    for _ in range(cfg.repeats):
        times["nanotrain"].append(timed(lambda: run_nanotrain(texts, cfg, bands, rows)))
        if ds_version:
            times["datasketch"].append(timed(lambda: run_datasketch(texts, cfg, bands, rows)))
            times["datasketch_noshingle"].append(timed(lambda: run_datasketch(texts, cfg, bands, rows, shingles=sets)))
    dps = {k: len(texts) / min(v) for k, v in times.items()}
    print("| method | precision | recall | pairs reported | docs/s | docs/s, shingles given |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (p, r, n) in results.items():
        label = "nanotrain.minhash" if name == "nanotrain" else f"datasketch {ds_version}"
        extra = f"{dps['datasketch_noshingle']:,.0f}" if name == "datasketch" else ""
        print(f"| {label} | {p:.3f} | {r:.3f} | {n} | {dps[name]:,.0f} | {extra} |")
    if ds_version:
        print(f"\nspeed-up: {dps['nanotrain'] / dps['datasketch']:.1f}x datasketch end to end (text to clusters), "
              f"{dps['nanotrain'] / dps['datasketch_noshingle']:.1f}x datasketch given its shingles "
              f"(best of {cfg.repeats} interleaved runs each)")
    # recall by similarity: the LSH S-curve and the estimate's noise both bite just above the threshold
    edges = [cfg.threshold, 0.85, 0.9, 0.95, 1.01]
    print(f"\nrecall by exact Jaccard ({' / '.join(roots)}):")
    for lo, hi in zip(edges, edges[1:]):
        members = [(i, j) for (i, j), s in truth.items() if lo <= s < hi]
        rec = " / ".join(f"{np.mean([rt[i] == rt[j] for i, j in members]):.3f}" for rt in roots.values())
        print(f"  J in [{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}: {rec}  ({len(members)} pairs)")

    if cfg.scale_docs:
        print(f"\nscale corpus: {cfg.scale_docs} documents (windows of the same text, 30% of words replaced); peak "
              f"resident memory added by building the index and clusters, each method in its own process:")
        for method in (["nanotrain", "datasketch"] if ds_version and cfg.baseline_scale else ["nanotrain"]):
            m = measure_memory(cfg, method)
            if m:
                print(f"  {method}: {m['peak_mib']:.0f} MiB ({m['peak_mib'] * 2**20 / m['docs']:,.0f} bytes/doc), "
                      f"{m['docs'] / m['seconds']:,.0f} docs/s")


if __name__ == "__main__":
    main()
