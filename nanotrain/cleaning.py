"""The cleaning pipeline: extraction -> content filter -> quality rules -> decontamination -> exact dedup ->
near-duplicate dedup, streamed over any number of input files with a reason recorded for every removal.

The order follows Gopher's MassiveWeb pipeline (Rae et al. 2021, sec. A.1.1): content filtering, text extraction,
quality filtering, repetition removal, deduplication, test-set filtering; here test-set filtering comes before
deduplication, so that when a contaminated copy and a clean copy of a page exist, the clean one is kept.

- ``Decontaminator``: 13-gram overlap with evaluation sets (the GPT-3 paper's test, Brown et al. 2020, sec. 4 and
  appendix C): a document sharing any normalised 13-word sequence with an evaluation item is removed or flagged.
  Given the field that holds an item's question, only the n-grams that span the question and the rest of the item
  (its answer) count: a page quoting a question with its answer is contaminated, a page quoting text that a question
  or an answer also quotes is not (the built-in world's "retell" questions quote stories told in pretraining text,
  and whole 8-grams of their templates occur in thousands of its documents).
- ``exact_key``: the text normalised (Unicode NFKC, case-folded, white space collapsed) and hashed; the first
  document with a key is kept.
- ``clean``: the whole pipeline. Pass 1 streams the documents in chunks (per-document work in ``--workers``
  processes), keeps the survivors in a stage file and their MinHash signatures in the index; the near-duplicate
  clusters are then found, and pass 2 streams the stage file into the output, dropping all but the first document
  of each cluster. Memory is bounded by the index, not by the text. ``CleaningReport`` counts everything.

    from nanotrain.cleaning import Steps, clean
    report = clean(["../shared/data/web_cc_dolma"], "out/clean/clean.jsonl", Steps())
    print(report.to_markdown())

The command line around it is data/clean.py.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import os
import unicodedata
from array import array
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nanotrain.extract import Doc, html_to_text, read_documents
from nanotrain.minhash import DedupResult, MinHasher, MinHashLSH, ngram_hashes, word_hashes
from nanotrain.quality import Blocklist, GopherRules, Reason, content_filter, gopher_quality
from nanotrain.truth_scores import DecisionLog, TruthScores

STEPS = ("extract", "content", "quality", "decontam", "exact_dedup", "near_dedup")

# ---------------------------------------------------------------------------------------------------------------
# Test-set decontamination


def _strings(x) -> list[str]:
    """Every string inside a JSON value (the text of an evaluation record, whatever its field names)."""
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        return [s for v in x.values() for s in _strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in _strings(v)]
    return []


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if path.name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _item(record, question: str) -> tuple[str, str]:
    """(question, the rest) of a JSON record: its ``question`` field and its other strings; without that field,
    (all its strings, "")."""
    if question and isinstance(record, dict) and isinstance(record.get(question), str):
        return record[question], "\n".join(_strings({k: v for k, v in record.items() if k != question}))
    return "\n".join(_strings(record)), ""


def eval_items(path: Path, question: str = "") -> list[tuple[str, str]]:
    """The items of an evaluation file as (question, rest) pairs: one per JSONL record or JSON array element (the
    ``question`` field, and the other strings; without it, all strings and ""), CSV row or non-empty line of a text
    file (.txt, .bz2, .gz) (the whole of it, and "")."""
    base = path.name.removesuffix(".gz").removesuffix(".bz2")
    with _open_text(path) as f:
        if base.endswith(".jsonl"):
            return [_item(json.loads(line), question) for line in f if line.strip()]
        if base.endswith(".json"):
            data = json.load(f)
            return [_item(r, question) for r in (data if isinstance(data, list) else [data])]
        if base.endswith(".csv"):
            return [("\n".join(row), "") for row in csv.reader(io.StringIO(f.read()))]
        return [(line, "") for line in f if line.strip()]


class Decontaminator:
    """The n-grams (default 13 words, normalised as in nanotrain.minhash: lower-cased, punctuation dropped) of
    evaluation sets, and which documents share any of them."""

    def __init__(self, n: int = 13, min_matches: int = 1):
        self.n, self.min_matches = n, min_matches
        self.names: list[str] = []
        self.items: Counter = Counter()  # items read per evaluation set
        self._grams = np.zeros(0, dtype=np.uint64)  # sorted, unique
        self._source = np.zeros(0, dtype=np.int32)  # index into names: the first set that has each n-gram

    def add(self, name: str, items: list[tuple[str, str]]) -> None:
        """Add an evaluation set's (question, rest) items: the n-grams of question + rest that span both (all of
        them when rest is empty)."""
        words, offsets = word_hashes([f"{q}\n{rest}" if rest else q for q, rest in items])
        grams, gram_offsets = ngram_hashes(words, offsets, self.n, short_docs=False)  # under n words: nothing
        per_item = np.diff(gram_offsets)
        start = np.arange(len(grams)) - np.repeat(gram_offsets[:-1], per_item)  # each n-gram's first word in its item
        q = np.repeat(np.diff(word_hashes([q for q, _ in items])[1]), per_item)  # its item's question words
        whole = np.repeat([not rest for _, rest in items], per_item)
        grams = grams[whole | ((start < q) & (start + self.n > q))]
        self.names.append(name)
        self.items[name] += len(items)
        grams = np.concatenate([self._grams, grams])
        source = np.concatenate([self._source, np.full(len(grams) - len(self._source), len(self.names) - 1,
                                                       dtype=np.int32)])
        self._grams, first = np.unique(grams, return_index=True)  # first occurrence wins: earlier sets first
        self._source = source[first]

    @classmethod
    def from_paths(cls, paths: list[str], n: int = 13, min_matches: int = 1, question: str = "") -> "Decontaminator":
        """Read evaluation files, or every file in evaluation folders (named by their path under the folder);
        ``question``: the JSON field holding an item's question (see the module docstring)."""
        dec = cls(n, min_matches)
        for p in map(Path, paths):
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")) if p.is_dir() else [p]
            if not p.exists():
                raise FileNotFoundError(f"{p}: no such evaluation file or folder")
            for f in files:
                if f.name.lower().startswith("readme"):
                    continue
                dec.add(str(f.relative_to(p.parent)), eval_items(f, question))
        return dec

    def __len__(self) -> int:
        return len(self._grams)

    def check(self, texts: list[str]) -> list[tuple[int, str] | None]:
        """For each text, None or (n-grams shared, the evaluation set it shares the most of them with)."""
        words, offsets = word_hashes(texts)
        grams, gram_offsets = ngram_hashes(words, offsets, self.n, short_docs=False)
        if len(self._grams) == 0 or len(grams) == 0:
            return [None] * len(texts)
        pos = np.minimum(np.searchsorted(self._grams, grams), len(self._grams) - 1)
        hit = self._grams[pos] == grams
        out = []
        for d in range(len(texts)):
            s, e = gram_offsets[d], gram_offsets[d + 1]
            hits = int(hit[s:e].sum())
            if hits >= self.min_matches:
                src = Counter(self._source[pos[s:e][hit[s:e]]].tolist()).most_common(1)[0][0]
                out.append((hits, self.names[src]))
            else:
                out.append(None)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Exact dedup


def exact_key(text: str) -> bytes:
    """128-bit hash of the normalised text: NFKC (full-width letters, ligatures), case-folded, white space collapsed."""
    norm = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=16).digest()


# ---------------------------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class Steps:
    """What the pipeline does; a step set to None / False is skipped (HTML extraction always runs)."""
    remove_boilerplate: bool = True  # HTML extraction drops the page chrome (nanotrain.extract.html_to_text)
    blocklist: Blocklist | None = None
    gopher: GopherRules | None = field(default_factory=GopherRules)
    decontaminator: Decontaminator | None = None
    decontam_mode: str = "remove"  # "remove", or "flag": keep the document, name the set in "contaminated"
    exact_dedup: bool = True
    near_dedup: bool = True
    num_perm: int = 128
    threshold: float = 0.8
    ngram: int = 5
    seed: int = 0


@dataclass
class Outcome:
    """What the per-document steps decided: removed at (step, reason), or kept with its dedup keys."""
    step: str | None = None
    reason: Reason | None = None
    key: bytes = b""
    signature: np.ndarray | None = None


def process_chunk(docs: list[Doc], steps: Steps) -> list[Outcome]:
    """The per-document steps for one chunk; a pure function of the documents (so it can run in any process)."""
    out = [Outcome() for _ in docs]
    for doc, o in zip(docs, out):
        if doc.html is not None:
            doc.record["text"], doc.html = html_to_text(doc.html, steps.remove_boilerplate), None
        text = doc.record["text"]
        if not text.strip():
            o.step, o.reason = "extract", Reason("no_text")
        elif steps.blocklist is not None and (r := content_filter(text, doc.record.get("url"), steps.blocklist)):
            o.step, o.reason = "content", r
        elif steps.gopher is not None and (r := gopher_quality(text, steps.gopher)):
            o.step, o.reason = "quality", r
    alive = [i for i, o in enumerate(out) if o.step is None]
    if steps.decontaminator is not None and alive:
        n = steps.decontaminator.n
        for i, hit in zip(alive, steps.decontaminator.check([docs[i].record["text"] for i in alive])):
            if hit is not None and steps.decontam_mode == "remove":
                out[i].step, out[i].reason = "decontam", Reason("eval_overlap", f"{hit[0]} {n}-gram(s) of {hit[1]}")
            elif hit is not None:
                docs[i].record["contaminated"] = hit[1]
        alive = [i for i in alive if out[i].step is None]
    for i in alive if steps.exact_dedup else ():
        out[i].key = exact_key(docs[i].record["text"])
    if steps.near_dedup and alive:
        sigs = MinHasher(steps.num_perm, steps.ngram, steps.seed).signatures([docs[i].record["text"] for i in alive])
        for i, s in zip(alive, sigs):
            out[i].signature = s
    return out


_WORKER_STEPS: Steps | None = None


def _init_worker(steps: Steps) -> None:
    global _WORKER_STEPS  # set once per worker process, so the (large) steps are not sent with every chunk
    _WORKER_STEPS = steps


def _work(docs: list[Doc]) -> tuple[list[Doc], list[Outcome]]:
    return docs, process_chunk(docs, _WORKER_STEPS)


def _chunks(it, size: int):
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ordered_map(steps: Steps, chunks, workers: int):
    """(docs, outcomes) per chunk, in input order; with workers > 1 at most 2 * workers chunks are in flight, so
    reading never runs ahead of processing (Pool.imap would read the whole input into memory)."""
    if workers <= 1:
        for docs in chunks:
            yield docs, process_chunk(docs, steps)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(steps,)) as pool:
        pending = deque()
        for docs in chunks:
            pending.append(pool.submit(_work, docs))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _preview(text: str, n: int = 160) -> str:
    flat = " ".join(text.split())
    return flat[:n] + ("…" if len(flat) > n else "")


@dataclass
class CleaningReport:
    entered: Counter = field(default_factory=Counter)   # documents entering each step
    removed: dict = field(default_factory=dict)         # step -> Counter(rule -> documents removed)
    examples: dict = field(default_factory=dict)        # (step, rule) -> [(origin, detail, preview)], at most 3
    flagged: Counter = field(default_factory=Counter)   # decontam "flag" mode: documents flagged per set
    issues: list = field(default_factory=list)          # nanotrain.extract.Issue: bad input, with file and line
    warc: dict = field(default_factory=dict)            # WARC records / responses / html pages read
    exact_groups: list = field(default_factory=list)    # (copies removed, kept origin, preview), largest first
    near_clusters: list = field(default_factory=list)   # [(origin, similarity, preview)], largest first
    documents_out: int = 0
    lsh: dict = field(default_factory=dict)             # bands, rows, candidates, verified, index bytes
    truth: TruthScores | None = None                     # per-step precision/recall, when the input carries kinds

    def remove(self, step: str, reason: Reason, origin: str, text: str, max_examples: int = 3) -> None:
        self.removed.setdefault(step, Counter())[reason.rule] += 1
        ex = self.examples.setdefault((step, reason.rule), [])
        if len(ex) < max_examples:
            ex.append((origin, reason.detail, _preview(text)))

    def to_markdown(self, title: str = "Cleaning report", settings: dict | None = None) -> str:
        md = [f"# {title}", ""]
        if settings:
            md += ["Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()), ""]
        read = self.entered["extract"]
        md += [f"Documents read: **{read}**; written: **{self.documents_out}**.", ""]
        if self.warc:
            md += ["WARC: " + ", ".join(f"{v} {k}" for k, v in self.warc.items()) + " (only HTML responses are "
                   "documents).", ""]
        md += ["## Documents per step", "", "| step | in | removed | out |", "|---|---:|---:|---:|"]
        for step in STEPS:
            if step in self.entered:
                gone = sum(self.removed.get(step, Counter()).values())
                md.append(f"| {step} | {self.entered[step]} | {gone} | {self.entered[step] - gone} |")
        md += ["", "## Removals per rule", "", "| step | rule | removed |", "|---|---|---:|"]
        for step in STEPS:
            for rule, n in sorted(self.removed.get(step, Counter()).items(), key=lambda kv: -kv[1]):
                md.append(f"| {step} | {rule} | {n} |")
        if self.flagged:
            md += ["", "Flagged (kept) by decontamination: " + ", ".join(f"{k}: {v}" for k, v in self.flagged.items())]
        if self.lsh:
            md += ["", "MinHash LSH: " + ", ".join(f"{k} {v}" for k, v in self.lsh.items())]
        if self.truth is not None:
            md += ["", self.truth.to_markdown().rstrip()]
        md += ["", "## Removed examples (up to 3 per rule)", ""]
        for step in STEPS:
            for rule in sorted(self.removed.get(step, Counter()), key=lambda r: -self.removed[step][r]):
                md.append(f"**{step} / {rule}**")
                md += [f"- `{o}` ({d}): {p!r}" if d else f"- `{o}`: {p!r}" for o, d, p in self.examples[(step, rule)]]
                md.append("")
        md += ["## Largest duplicate clusters", ""]
        if self.exact_groups:
            md += ["Exact duplicates (normalised text):", "", "| copies removed | kept | text |", "|---:|---|---|"]
            md += [f"| {n} | `{o}` | {p!r} |" for n, o, p in self.exact_groups]
            md.append("")
        if self.near_clusters:
            md.append("Near duplicates (MinHash; estimated Jaccard with an earlier member):")
            md.append("")
            for i, members in enumerate(self.near_clusters, 1):
                md.append(f"{i}. {len(members)} documents, kept `{members[0][0]}`: {members[0][2]!r}")
                md += [f"   - `{o}` (J≈{s:.2f}): {p!r}" for o, s, p in members[1:6]]
                if len(members) > 6:
                    md.append(f"   - … and {len(members) - 6} more")
        if not self.exact_groups and not self.near_clusters:
            md.append("None found.")
        md += ["", f"## Input problems ({len(self.issues)})", ""]
        md += [f"- `{i}`" for i in self.issues[:100]] or ["None."]
        if len(self.issues) > 100:
            md.append(f"- … and {len(self.issues) - 100} more")
        return "\n".join(md) + "\n"


def clean(inputs: list[str], out_path, steps: Steps, workers: int = 1, chunk_docs: int = 256, strict: bool = False,
          txt_split: str = "file", progress: bool = True, top_clusters: int = 5, truth_field: str = "kind"
          ) -> CleaningReport:
    """Run the pipeline over the input files/folders and write the surviving records to ``out_path`` (JSONL).
    When the records carry ``truth_field`` (their true kind), the report scores every step against it."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stage_path = out_path.with_name(out_path.name + ".stage")
    rep = CleaningReport()
    lsh = MinHashLSH(steps.threshold, steps.num_perm, steps.ngram, steps.seed) if steps.near_dedup else None
    seen: dict[bytes, int] = {}      # exact key -> stage index of the first document with it
    exact_copies: Counter = Counter()  # stage index -> copies removed
    origins: list[str] = []          # stage index -> origin
    stage_doc = array("q")           # stage index -> document index (input order)
    log = DecisionLog(truth_field)

    enabled = [step for step, on in zip(STEPS, (True, steps.blocklist is not None, steps.gopher is not None,
                                                steps.decontaminator is not None, steps.exact_dedup,
                                                steps.near_dedup)) if on]
    per_doc_steps = [s for s in enabled if s not in ("exact_dedup", "near_dedup")]
    docs_iter = read_documents(inputs, rep.issues, strict=strict, txt_split=txt_split, warc_counts=rep.warc)
    bar = tqdm(desc="clean: filter", unit="doc", disable=not progress)
    with open(stage_path, "w", encoding="utf-8") as stage:
        for docs, outcomes in _ordered_map(steps, _chunks(docs_iter, chunk_docs), workers):
            bar.update(len(docs))
            sigs = []
            for doc, o in zip(docs, outcomes):
                index = rep.entered["extract"]
                log.read(index, doc.record, o.step)
                for step in enabled[:enabled.index(o.step) + 1] if o.step else per_doc_steps:
                    rep.entered[step] += 1
                if o.step is not None:
                    rep.remove(o.step, o.reason, doc.origin, doc.record.get("text", ""))
                    continue
                if "contaminated" in doc.record and steps.decontaminator is not None:
                    rep.flagged[doc.record["contaminated"]] += 1
                if steps.exact_dedup:
                    rep.entered["exact_dedup"] += 1
                    if o.key in seen:
                        exact_copies[seen[o.key]] += 1
                        log.duplicate(index, "exact_dedup", stage_doc[seen[o.key]])
                        rep.remove("exact_dedup", Reason("exact_duplicate", f"same text as {origins[seen[o.key]]}"),
                                   doc.origin, doc.record["text"])
                        continue
                    seen[o.key] = len(origins)
                origins.append(doc.origin)
                stage_doc.append(index)
                stage.write(json.dumps({"origin": doc.origin, "record": doc.record}, ensure_ascii=False) + "\n")
                if lsh is not None:
                    sigs.append(o.signature)
            if lsh is not None and sigs:
                lsh.add(np.stack(sigs))
    bar.close()

    result: DedupResult | None = None
    if lsh is not None:
        result = lsh.clusters()
        rep.lsh = {"bands": lsh.bands, "rows": lsh.rows, "candidate pairs": result.candidates,
                   "verified pairs": result.verified, "index MiB": round(lsh.nbytes() / 2**20, 2)}
    top_exact = {i for i, _ in exact_copies.most_common(top_clusters)}
    clusters = result.clusters()[:top_clusters] if result is not None else []
    in_top_cluster = {d for c in clusters for d in c}
    previews: dict[int, str] = {}
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    with open(stage_path, encoding="utf-8") as stage, open(tmp_path, "w", encoding="utf-8") as out:
        for i, line in enumerate(tqdm(stage, total=len(origins), desc="clean: write", unit="doc",
                                      disable=not progress)):
            item = json.loads(line)
            text = item["record"]["text"]
            if i in top_exact or i in in_top_cluster:
                previews[i] = _preview(text)
            if result is not None:
                rep.entered["near_dedup"] += 1
                if not result.keep[i]:
                    root = int(result.root[i])
                    log.duplicate(stage_doc[i], "near_dedup", stage_doc[root])
                    rep.remove("near_dedup", Reason("near_duplicate", f"J≈{result.similarity[i]:.2f}, "
                                                    f"cluster of {origins[root]}"), item["origin"], text)
                    continue
            out.write(json.dumps(item["record"], ensure_ascii=False) + "\n")
            rep.documents_out += 1
    os.replace(tmp_path, out_path)  # the output appears whole or not at all
    stage_path.unlink()
    rep.truth = log.scores(enabled)
    rep.exact_groups = [(n, origins[i], previews.get(i, "")) for i, n in exact_copies.most_common(top_clusters)]
    rep.near_clusters = [[(origins[d], float(result.similarity[d]) if j else 1.0, previews.get(d, ""))
                          for j, d in enumerate(c)] for c in clusters]
    return rep
