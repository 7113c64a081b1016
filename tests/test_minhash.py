"""MinHash: tokenizer and shingles against a plain-Python reference, exact arithmetic against Python integers,
Jaccard estimates against exact Jaccard (3 sigma), the LSH candidate rate against 1 - (1 - s^r)^b, and
near-duplicate clusters on planted duplicates."""
import numpy as np
import pytest

from nanotrain.minhash import (MERSENNE61, MinHasher, MinHashLSH, UnionFind, candidate_probability, deduplicate,
                               jaccard_estimate, lsh_params, mulmod61, ngram_hashes, reference_shingles,
                               reference_words, word_hashes)

TEXTS = [
    "Hello, World! Hello world... the QUICK brown fox; jumps over the lazy dog.",
    "",
    "   \n\t ",
    "Ünïcödé wörds — and “quotes”, 日本語のテキスト, emoji 👋🏽 and CamelCase-words_with_underscores",
    "a " * 3 + "supercalifragilisticexpialidocious " + "x" * 600 + " " + "y" * 17,
    "one two",
    "numbers 3.14159 and 2024-04-25 and e-mail a.b@c.org",
]


def test_word_tokenizer_matches_python_reference():
    words, offsets = word_hashes(TEXTS)
    for d, text in enumerate(TEXTS):
        ref = reference_words(text)
        assert offsets[d + 1] - offsets[d] == len(ref), text
    # equal words <-> equal hashes, across documents too
    flat = [w for t in TEXTS for w in reference_words(t)]
    by_word = {}
    for w, h in zip(flat, words.tolist()):
        assert by_word.setdefault(w, h) == h
    assert len(set(by_word.values())) == len(by_word)


def test_shingles_match_python_reference():
    words, offsets = word_hashes(TEXTS)
    for n in (1, 3, 5):
        hashes, sh_off = ngram_hashes(words, offsets, n)
        by_shingle = {}
        for d, text in enumerate(TEXTS):
            ref = [b" ".join(reference_words(text)[i:i + n]) for i in range(sh_off[d + 1] - sh_off[d])]
            assert set(ref) == reference_shingles(text, n)
            for s, h in zip(ref, hashes[sh_off[d]:sh_off[d + 1]].tolist()):
                assert by_shingle.setdefault(s, h) == h
        assert len(set(by_shingle.values())) == len(by_shingle)
    # documents shorter than n words: one shingle with short_docs, none without
    _, off = ngram_hashes(words, offsets, 5, short_docs=False)
    assert off[6] - off[5] == 0 and off[1] - off[0] > 0


def test_signatures_do_not_depend_on_the_batch():
    mh = MinHasher(num_perm=64, block=64)
    together = mh.signatures(TEXTS)
    alone = np.concatenate([mh.signatures([t]) for t in TEXTS])
    assert np.array_equal(together, alone)
    assert (together[1] == mh.empty_value).all()  # an empty document has the empty signature


def test_mulmod61_is_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(0, MERSENNE61, 2000, dtype=np.uint64)
    x = rng.integers(0, MERSENNE61, 2000, dtype=np.uint64)
    x[:4] = [0, 1, MERSENNE61 - 1, MERSENNE61 - 2]
    a[:4] = [MERSENNE61 - 1, MERSENNE61 - 1, MERSENNE61 - 1, 2]
    got = mulmod61(a, x)
    assert [int(g) for g in got] == [int(p) * int(q) % MERSENNE61 for p, q in zip(a, x)]


@pytest.mark.parametrize("scheme", ["affine32", "mersenne61"])
def test_signatures_match_naive_minimum(scheme):
    rng = np.random.default_rng(1)
    sets = [rng.integers(0, 2**64, k, dtype=np.uint64) for k in (1, 7, 50)]
    offsets = np.cumsum([0] + [len(s) for s in sets])
    mh = MinHasher(num_perm=16, scheme=scheme)
    sig = mh.signatures_from_hashes(np.concatenate(sets), offsets)
    a, b = mh.permutations()
    for d, s in enumerate(sets):
        for k in range(16):
            if scheme == "affine32":
                want = min((int(a[k]) * (int(h) >> 32) + int(b[k])) % 2**32 for h in s)
            else:
                want = min((int(a[k]) * (int(h) % MERSENNE61) + int(b[k])) % MERSENNE61 for h in s)
            assert int(sig[d, k]) == want


def random_pair(rng, jaccard: float, union: int = 400):
    """Two sets of random 64-bit values with |A n B| / |A u B| = jaccard exactly."""
    values = rng.choice(2**62, size=union, replace=False).astype(np.uint64)
    inter = round(jaccard * union)
    rest = values[inter:]
    half = rng.random(len(rest)) < 0.5
    return np.concatenate([values[:inter], rest[half]]), np.concatenate([values[:inter], rest[~half]]), inter / union


@pytest.mark.parametrize("scheme", ["affine32", "mersenne61"])
def test_jaccard_estimates_within_3_sigma(scheme):
    num_perm, reps = 128, 24
    rng = np.random.default_rng(2)
    for target in (0.1, 0.3, 0.5, 0.8, 0.95):
        estimates, exact = [], None
        for rep in range(reps):
            a, b, exact = random_pair(rng, target)
            sig = MinHasher(num_perm=num_perm, seed=rep, scheme=scheme).signatures_from_hashes(
                np.concatenate([a, b]), np.array([0, len(a), len(a) + len(b)]))
            estimates.append(jaccard_estimate(sig[0], sig[1]))
        est = np.array(estimates)
        sigma = np.sqrt(exact * (1 - exact) / num_perm)  # each estimate is Binomial(K, J) / K
        assert np.mean(np.abs(est - exact) <= 3 * sigma) >= 0.95  # 99.7% expected
        assert abs(est.mean() - exact) <= 3 * sigma / np.sqrt(reps)  # unbiased
        assert 0.6 * sigma <= est.std() <= 1.4 * sigma  # and as precise as theory says


def test_lsh_candidate_rate_follows_the_s_curve():
    bands, rows, pairs = 8, 4, 300
    rng = np.random.default_rng(3)
    for s in (0.3, 0.5, 0.7, 0.85):
        sets = []
        for _ in range(pairs):
            a, b, _ = random_pair(rng, s, union=200)
            sets += [a, b]
        lsh = MinHashLSH(threshold=0.5, num_perm=bands * rows, bands=bands, rows=rows, seed=7)
        offsets = np.cumsum([0] + [len(x) for x in sets])
        lsh.add(lsh.hasher.signatures_from_hashes(np.concatenate(sets), offsets))
        found = {tuple(p) for p in lsh.candidate_pairs().tolist()}
        rate = np.mean([(2 * i, 2 * i + 1) in found for i in range(pairs)])
        p = float(candidate_probability(s, bands, rows))
        assert abs(rate - p) <= 3 * np.sqrt(p * (1 - p) / pairs) + 0.01, (s, rate, p)


def test_lsh_params_minimise_the_error_areas():
    def naive(threshold, num_perm, steps=400):  # midpoint rule, plain Python
        best = None
        for b in range(1, num_perm + 1):
            for r in range(1, num_perm // b + 1):
                prob = lambda s: 1 - (1 - s ** r) ** b  # noqa: E731
                fp = sum(prob((i + 0.5) * threshold / steps) for i in range(steps)) * threshold / steps
                fn = sum(1 - prob(threshold + (i + 0.5) * (1 - threshold) / steps) for i in range(steps)) \
                    * (1 - threshold) / steps
                if best is None or 0.5 * fp + 0.5 * fn < best[0]:
                    best = (0.5 * fp + 0.5 * fn, (b, r))
        return best[1]
    for threshold, num_perm in ((0.5, 16), (0.8, 32), (0.8, 128)):
        assert lsh_params(threshold, num_perm) == naive(threshold, num_perm)


def test_union_find_keeps_the_earliest_as_root():
    uf = UnionFind(6)
    uf.union(4, 2)
    uf.union(5, 4)
    uf.union(3, 1)
    assert [uf.find(i) for i in range(6)] == [0, 1, 2, 1, 2, 2]


def _vocab_doc(rng, vocab, n):
    return [vocab[i] for i in rng.integers(0, len(vocab), n)]


def test_dedup_finds_planted_near_duplicates():
    rng = np.random.default_rng(4)
    vocab = [f"w{i}" for i in range(5000)]
    docs, truth = [], {}
    for g in range(20):
        base, base_index = _vocab_doc(rng, vocab, 300), len(docs)
        truth[base_index] = base_index
        docs.append(" ".join(base))
        for _ in range(2):  # near copies: 2 of 300 words replaced -> Jaccard of 5-shingles about 0.94
            copy = list(base)
            for pos in rng.integers(0, 300, 2):
                copy[pos] = "changed"
            truth[len(docs)] = base_index
            docs.append(" ".join(copy))
        far = list(base)  # a far copy: every 4th word replaced -> Jaccard about 0.2: a different document
        for pos in range(0, 300, 4):
            far[pos] = "other"
        truth[len(docs)] = len(docs)
        docs.append(" ".join(far))
    docs.append(docs[0])  # an exact copy, last
    truth[len(docs) - 1] = 0
    result = deduplicate(docs, threshold=0.8, num_perm=128, chunk=7)
    assert result.root.tolist() == [truth[i] for i in range(len(docs))]
    assert result.keep.sum() == 40
    sizes = [len(c) for c in result.clusters()]
    assert sizes[0] == 4 and sizes[1:] == [3] * 19


def test_streaming_chunks_give_the_same_clusters_and_empty_docs_are_never_candidates():
    rng = np.random.default_rng(5)
    vocab = [f"v{i}" for i in range(300)]
    docs = [" ".join(_vocab_doc(rng, vocab, 40)) for _ in range(60)]
    docs += docs[:10] + ["", "", "..."]
    one = deduplicate(docs, chunk=len(docs))
    many = deduplicate(docs, chunk=3)
    assert np.array_equal(one.root, many.root) and one.keep.sum() == 63
    assert one.keep[-3:].all()  # the empty texts stay (exact dedup, not MinHash, deals with them)
