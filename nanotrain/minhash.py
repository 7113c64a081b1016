"""MinHash near-duplicate detection: shingles -> signatures -> LSH bands -> verified pairs -> clusters.

The idea (Broder 1997, "On the resemblance and containment of documents"): cut each document into a set of word
n-grams ("shingles"). For a random permutation h of the shingle universe,

    P[ min h(A) == min h(B) ] = |A n B| / |A u B| = J(A, B)                                   (Broder, eq. 1)

so K independent permutations give a K-number signature whose fraction of equal positions estimates the Jaccard
similarity J with standard deviation sqrt(J(1-J)/K). Comparing all pairs of signatures is quadratic, so
locality-sensitive hashing (Indyk & Motwani 1998; Leskovec et al., "Mining of Massive Datasets", ch. 3.4) cuts
each signature into b bands of r rows: two documents become a *candidate pair* if any band is identical, which
happens with probability

    P[candidate | J = s] = 1 - (1 - s^r)^b                                                    (MMDS eq. 3.4)

an S-curve whose step sits near (1/b)^(1/r). (b, r) are chosen for a Jaccard threshold t by minimising the
false-positive area  int_0^t P ds  plus the false-negative area  int_t^1 (1 - P) ds. Candidates are then checked
against the signature estimate of J, joined with union-find, and the earliest document of each cluster is kept
(Lee et al. 2021, "Deduplicating Training Data Makes Language Models Better", use the same recipe: 5-gram
shingles, J >= 0.8).

Speed comes from never touching one shingle at a time in Python: a whole chunk of documents is turned into one
byte buffer, words are found and hashed with numpy, n-grams are combined with numpy, and each permutation is
applied to all shingles of the chunk in one vector operation. Two permutation families are offered:

- ``"affine32"`` (default): h_k(x) = (a_k x + b_k) mod 2^32 with a_k odd, on the top 32 bits of the (already
  avalanched) stable 64-bit shingle hash. An odd multiplier makes each h_k a bijection, and it costs two cheap
  32-bit vector operations per (shingle, permutation); datasketch >= 2.0 uses the same family ("affine32").
- ``"mersenne61"``: the textbook universal family h_k(x) = (a_k x + b_k) mod (2^61 - 1) (Carter & Wegman 1979) on
  the 64-bit shingle hash, computed exactly with 32-bit limbs since numpy has no 128-bit integers. The ~15 uint64
  operations per (shingle, permutation) make it 20-25x slower in numpy, so it is the reference, not the default;
  both pass the same accuracy tests.

Memory is bounded by the index (K numbers and b band keys per document), not by the text: documents stream
through ``MinHashLSH.add`` in chunks and only their signatures stay.

    from nanotrain.minhash import MinHashLSH
    lsh = MinHashLSH(threshold=0.8, num_perm=128, ngram=5)
    for chunk in chunks_of_texts:
        lsh.add(lsh.signatures(chunk))
    result = lsh.clusters()        # result.keep[i]: document i survives; result.root[i]: the one it duplicates

Benchmark against datasketch: ``python bench/bench_dedup.py``.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

U64 = np.uint64
MERSENNE61 = (1 << 61) - 1
_P61 = U64(MERSENNE61)
_MASK32 = U64(0xFFFFFFFF)

# ---------------------------------------------------------------------------------------------------------------
# Stable 64-bit hashing. Python's hash() is salted per process (PYTHONHASHSEED), so it would make signatures, and
# therefore which duplicate is kept, differ from run to run; everything below is plain integer arithmetic.


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijection that makes every output bit depend on every input bit.
    (uint64 multiplication wraps around, which is exactly the intended arithmetic mod 2^64.)"""
    h = h ^ (h >> U64(33))
    h *= U64(0xFF51AFD7ED558CCD)
    h ^= h >> U64(33)
    h *= U64(0xC4CEB9FE1A85EC53)
    h ^= h >> U64(33)
    return h


def splitmix64(seed: int, n: int) -> np.ndarray:
    """n pseudo-random 64-bit numbers from ``seed`` (SplitMix64, Steele et al. 2014). Used instead of numpy's
    generators so that the permutations, and hence every signature, stay the same across numpy versions."""
    golden = 0x9E3779B97F4A7C15
    z = np.array([(seed + i * golden) % (1 << 64) for i in range(1, n + 1)], dtype=U64)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


# Word characters after ASCII lower-casing: ASCII letters and digits, and every byte of a multi-byte UTF-8
# character (so words in any script are kept whole; ASCII punctuation and white space separate words).
# _NORMALISE lower-cases ASCII letters and turns every other byte that is not a word character into 0.
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_NORMALISE = bytes(c if c in b"0123456789abcdefghijklmnopqrstuvwxyz" or c >= 0x80 else 0
                   for c in _ASCII_LOWER)
_WORD_RE = re.compile(rb"[0-9a-z\x80-\xff]+")
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=U64)  # keep k low bytes
_MAX_WORD_CHUNKS = 16  # words are hashed from their first 128 bytes (and their length); longer "words" are junk
_NGRAM_MIX = splitmix64(0x5EED, 64) | U64(1)  # one odd multiplier per position inside an n-gram


def _encode(text: str) -> bytes:
    # surrogatepass: a lone surrogate (possible in JSON-decoded text) hashes deterministically instead of failing
    return text.encode("utf-8", "surrogatepass")


def reference_words(text: str) -> list[bytes]:
    """The word definition of this module in plain Python: ASCII-lower-cased UTF-8 split on ASCII punctuation and
    white space. The numpy tokenizer below must agree with it (tests check), and the datasketch baseline in
    bench/bench_dedup.py is fed shingles built from it."""
    return _WORD_RE.findall(_encode(text).translate(_ASCII_LOWER))


def reference_shingles(text: str, n: int) -> set[bytes]:
    """The shingle set of one document: every run of n consecutive words (the whole text if it has fewer)."""
    w = reference_words(text)
    return {b" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))} if w else set()


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hash every word of every text at once. Returns (hashes uint64[W], offsets int64[D+1]): the words of text d
    are hashes[offsets[d]:offsets[d+1]].

    The texts are joined into one byte buffer; a word is a maximal run of word bytes. Each word is read straight out
    of the buffer 8 bytes at a time (an unaligned uint64 view), the bytes past its end masked off; no word contains
    a zero byte, so these 8-byte chunks identify it. A longer word's chunks are folded through fmix64."""
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]  # as _encode, without a call per text
    doc_start = np.cumsum([1] + [len(e) + 1 for e in encoded])  # each text is preceded by one separator byte
    # one leading and 8 trailing separators: every word has a byte before it, and 8-byte reads never run off the end
    buf = (b"\n" + b"\n".join(encoded) + b"\0" * 8).translate(_NORMALISE)
    is_word = np.frombuffer(buf, dtype=np.uint8) != 0
    boundaries = np.flatnonzero(is_word[1:] != is_word[:-1]) + 1  # alternately a word's first byte, the byte after
    starts, lengths = boundaries[0::2], boundaries[1::2] - boundaries[0::2]
    chunks8 = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))  # chunks8[i] = buf[i:i+8]
    # A word of up to 8 bytes is its own 64-bit code (its bytes, zero-padded); n-gram hashing mixes it later.
    h = chunks8[starts] & _LOW_BYTES[np.minimum(lengths, 8)]
    long_words = np.flatnonzero(lengths > 8)
    h[long_words] = fmix64(h[long_words])
    for c in range(1, _MAX_WORD_CHUNKS):  # the words longer than 8 bytes: fold in their next 8 bytes
        long_words = long_words[lengths[long_words] > 8 * c]
        if len(long_words) == 0:
            break
        rest = _LOW_BYTES[np.minimum(lengths[long_words] - 8 * c, 8)]
        h[long_words] = fmix64(h[long_words] ^ (chunks8[starts[long_words] + 8 * c] & rest))
    very_long = np.flatnonzero(lengths > 8 * _MAX_WORD_CHUNKS)  # hashed from a prefix: add the length too
    h[very_long] = fmix64(h[very_long] + lengths[very_long].astype(U64))
    offsets = np.searchsorted(starts, doc_start).astype(np.int64)  # words before each text's first byte
    return h, offsets


def ngram_hashes(words: np.ndarray, offsets: np.ndarray, n: int, short_docs: bool = True):
    """Hashes of every run of n consecutive words inside each document (never across two documents).

    A document with fewer than n words (but at least one) yields one shingle of all its words when ``short_docs``
    (so that short texts can still be compared), none otherwise. Returns (hashes uint64[S], offsets int64[D+1]).
    The n-gram hash is fmix64 of  sum_t word[i+t] * m_t  (mod 2^64) with fixed odd multipliers m_t, so word order
    matters."""
    counts = np.diff(offsets)
    full = counts >= n
    short = np.flatnonzero(~full & (counts > 0)) if short_docs else np.zeros(0, dtype=np.int64)
    per_doc = np.where(full, counts - n + 1, 0)
    per_doc[short] = 1
    sh_offsets = np.concatenate([[0], np.cumsum(per_doc)]).astype(np.int64)
    first = np.repeat(offsets[:-1] - sh_offsets[:-1], per_doc) + np.arange(sh_offsets[-1])  # each one's first word
    # Every window of n consecutive words of the whole word array at once, from n shifted slices; windows that
    # cross from one document into the next are computed too, and simply never picked.
    span = max(len(words) - n + 1, 0)
    windows = np.zeros(span, dtype=U64)
    for t in range(n):
        windows += words[t:t + span] * _NGRAM_MIX[t]
    acc = np.zeros(sh_offsets[-1], dtype=U64)
    in_full_doc = np.repeat(full, per_doc)
    acc[in_full_doc] = windows[first[in_full_doc]]
    if len(short):  # the one shingle of a short document sums only the words it has
        short_acc = np.zeros(len(short), dtype=U64)
        for t in range(n - 1):
            has = counts[short] > t
            short_acc += np.where(has, words[np.minimum(offsets[short] + t, len(words) - 1)], U64(0)) * _NGRAM_MIX[t]
        acc[sh_offsets[short]] = short_acc
    return fmix64(acc), sh_offsets


# ---------------------------------------------------------------------------------------------------------------
# Permutations and signatures.


def mulmod61(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(a * x) mod (2^61 - 1) for uint64 arrays with a, x < 2^61, exactly, without 128-bit integers.

    Split both into 32-bit limbs (the high limbs have 29 bits): a*x = ah*xh*2^64 + (ah*xl + al*xh)*2^32 + al*xl,
    and every partial product fits in 64 bits. Then use 2^61 = 1 (mod p): 2^64 = 8, and a number y*2^32 with
    y = y1*2^29 + y0 equals y1 + y0*2^32."""
    al, ah = a & _MASK32, a >> U64(32)
    xl, xh = x & _MASK32, x >> U64(32)
    mid = ah * xl + al * xh                     # < 2^62
    low = al * xl                               # < 2^64
    r = (ah * xh) << U64(3)                     # ah*xh*2^64 = 8*ah*xh < 2^61
    r += (mid >> U64(29)) + ((mid & U64((1 << 29) - 1)) << U64(32))
    r += (low & _P61) + (low >> U64(61))
    return _reduce61(r)


def _reduce61(r: np.ndarray) -> np.ndarray:
    """Fully reduce r < 2^64 modulo 2^61 - 1 (two folds of the top bits, then one conditional subtraction)."""
    r = (r & _P61) + (r >> U64(61))
    r = (r & _P61) + (r >> U64(61))
    return np.where(r >= _P61, r - _P61, r)


@dataclass(frozen=True)
class MinHasher:
    """K hash permutations h_k(x) = (a_k x + b_k) mod M over shingle hashes, and the signatures they give."""
    num_perm: int = 128
    ngram: int = 5
    seed: int = 0
    scheme: str = "affine32"  # "affine32" (M = 2^32, fast) or "mersenne61" (M = 2^61 - 1, textbook)
    block: int = 1 << 17  # shingles per vectorised block: one permuted block (512 KiB) stays in the CPU cache

    def __post_init__(self):
        if self.scheme not in ("affine32", "mersenne61"):
            raise ValueError(f"scheme must be 'affine32' or 'mersenne61', not {self.scheme!r}")
        if self.num_perm < 1 or self.ngram < 1:
            raise ValueError("num_perm and ngram must be positive")

    @property
    def dtype(self):
        return np.uint32 if self.scheme == "affine32" else np.uint64

    @property
    def empty_value(self) -> int:
        """The signature of a document without shingles (never a candidate; see MinHashLSH.add)."""
        return 0xFFFFFFFF if self.scheme == "affine32" else MERSENNE61

    @functools.cached_property
    def perms(self) -> tuple[list, list]:
        """The (a_k, b_k) as lists of numpy scalars: computed once, cheap to index in the signature loop."""
        a, b = self.permutations()
        return list(a), list(b)

    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        r = splitmix64(self.seed, 2 * self.num_perm)
        if self.scheme == "affine32":  # a odd (a bijection mod 2^32), b any
            return (r[0::2] | U64(1)).astype(np.uint32), (r[1::2] >> U64(32)).astype(np.uint32)
        a = r[0::2] % U64(MERSENNE61 - 1) + U64(1)  # a in [1, p), b in [0, p): Carter & Wegman 1979
        return a, r[1::2] % _P61

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(len(texts), num_perm) MinHash signatures of word n-gram shingle sets."""
        words, offsets = word_hashes(texts)
        shingles, sh_offsets = ngram_hashes(words, offsets, self.ngram)
        return self.signatures_from_hashes(shingles, sh_offsets)

    def signatures_from_hashes(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures of sets given as 64-bit hashes: set d is hashes[offsets[d]:offsets[d+1]]."""
        a, b = self.perms
        if self.scheme == "affine32":
            x = (hashes >> U64(32)).astype(np.uint32)  # fmix64 output: its top 32 bits are as good as any
        else:
            x = _reduce61(hashes)
        n_docs = len(offsets) - 1
        sig_t = np.full((self.num_perm, n_docs), self.empty_value, dtype=self.dtype)  # one row per permutation
        counts = np.diff(offsets)
        buf = np.empty(self.block, dtype=self.dtype)
        d0 = 0
        while d0 < n_docs:  # a block of whole documents with about `block` shingles (a longer document: alone)
            d1 = max(int(np.searchsorted(offsets, offsets[d0] + self.block, side="right")) - 1, d0 + 1)
            s0, s1 = offsets[d0], offsets[d1]
            docs = d0 + np.flatnonzero(counts[d0:d1] > 0)
            firsts = offsets[docs] - s0  # where each document's run of shingles starts in the block
            xs = x[s0:s1]
            perm = buf[:len(xs)] if len(xs) <= self.block else np.empty(len(xs), dtype=self.dtype)
            all_docs = len(docs) == d1 - d0  # no empty document: results go straight into the signature rows
            for k in range(self.num_perm if len(docs) else 0):
                # h_k of every shingle of the block (one contiguous vector: fast), then each document's minimum
                if self.scheme == "affine32":  # uint32 arithmetic wraps around: the mod 2^32 is free
                    np.multiply(xs, a[k], out=perm)
                    np.add(perm, b[k], out=perm)
                else:
                    perm = _reduce61(mulmod61(a[k], xs) + b[k])
                if all_docs:
                    np.minimum.reduceat(perm, firsts, out=sig_t[k, d0:d1])
                else:
                    sig_t[k, docs] = np.minimum.reduceat(perm, firsts)
            d0 = d1
        return np.ascontiguousarray(sig_t.T)


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature positions: an unbiased estimate of J (row-wise for 2-d inputs)."""
    return (sig_a == sig_b).mean(axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# Locality-sensitive hashing.


def candidate_probability(s, bands: int, rows: int):
    """P[two documents of Jaccard s share at least one band] = 1 - (1 - s^r)^b (MMDS eq. 3.4)."""
    return 1.0 - (1.0 - np.asarray(s, dtype=np.float64) ** rows) ** bands


def _area(y: np.ndarray, x: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)  # trapezoid rule


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising  fp_weight * FP + fn_weight * FN, where
    FP = int_0^t P(s) ds (pairs below the threshold that become candidates) and FN = int_t^1 (1 - P(s)) ds."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), not {threshold}")
    below = np.linspace(0.0, threshold, 501)
    above = np.linspace(threshold, 1.0, 501)
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            err = (fp_weight * _area(candidate_probability(below, bands, rows), below)
                   + fn_weight * _area(1.0 - candidate_probability(above, bands, rows), above))
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


# Every candidate pair is verified against its estimated Jaccard afterwards, so an LSH false positive costs one
# cheap comparison while an LSH false negative is a duplicate left in the data: the band search weighs misses 4:1.
# (For t = 0.8 and 128 permutations: 12 bands of 10 rows, P[candidate] = 0.74 at J = 0.8 and 0.93 at J = 0.85,
# where equal weights give 9 x 13 with 0.40 and 0.69.)
FN_WEIGHT = 0.8


class UnionFind:
    """Disjoint sets over 0..n-1 with path compression; the smallest index is always the root, so the root of a
    cluster is its earliest document: the one dedup keeps."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression: point everything on the way straight at the root
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


@dataclass
class DedupResult:
    keep: np.ndarray        # bool[N]: the document survives (it is the earliest of its cluster, or alone)
    root: np.ndarray        # int64[N]: index of the kept document of its cluster (itself if kept)
    similarity: np.ndarray  # float[N]: best estimated J with an earlier document (0 if none passed the check)
    candidates: int         # candidate pairs checked (after LSH)
    pairs: np.ndarray       # (P, 2) the candidate pairs whose estimated Jaccard reached the threshold

    @property
    def verified(self) -> int:
        return len(self.pairs)

    def clusters(self, min_size: int = 2) -> list[list[int]]:
        """Clusters of at least min_size documents, largest first, each listed kept-document first."""
        order = np.argsort(self.root, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(self.root[order])) + 1) if len(order) else []
        groups = [g.tolist() for g in groups if len(g) >= min_size]
        return sorted(groups, key=lambda g: (-len(g), g[0]))


class MinHashLSH:
    """A streaming MinHash index: add signatures chunk by chunk, then find the near-duplicate clusters."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 0,
                 scheme: str = "affine32", bands: int | None = None, rows: int | None = None,
                 fn_weight: float = FN_WEIGHT):
        self.hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed, scheme=scheme)
        self.threshold = threshold
        if (bands is None) != (rows is None):
            raise ValueError("give both bands and rows, or neither")
        self.bands, self.rows = (bands, rows) if bands is not None else \
            lsh_params(threshold, num_perm, fp_weight=1 - fn_weight, fn_weight=fn_weight)
        if self.bands * self.rows > num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {num_perm}")
        self._band_mix = splitmix64(seed + 0xBA5D, self.rows) | U64(1)
        self._sigs: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []

    def signatures(self, texts: list[str]) -> np.ndarray:
        return self.hasher.signatures(texts)

    def __len__(self) -> int:
        return sum(len(s) for s in self._sigs)

    def nbytes(self) -> int:
        """Memory held by the index: signatures and band keys."""
        return sum(s.nbytes for s in self._sigs) + sum(k.nbytes for k in self._keys)

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """(n, bands) 64-bit keys, one per (document, band): equal bands give equal keys. A document without
        shingles gets key 0 in every band, which no bucket takes in."""
        if sigs.ndim != 2 or sigs.shape[1] != self.hasher.num_perm:
            raise ValueError(f"expected signatures of shape (n, {self.hasher.num_perm}), got {sigs.shape}")
        bands = sigs[:, :self.bands * self.rows].reshape(len(sigs), self.bands, self.rows).astype(U64)
        keys = fmix64((bands * self._band_mix).sum(axis=2, dtype=U64))
        keys[(sigs == self.hasher.empty_value).all(axis=1)] = U64(0)
        return keys

    def add(self, sigs: np.ndarray) -> None:
        """Index a chunk of signatures; documents are numbered in the order they are added."""
        keys = self.band_keys(sigs)
        self._sigs.append(sigs)
        self._keys.append(keys)

    def candidate_pairs(self) -> np.ndarray:
        """(P, 2) pairs (first, other) of documents sharing a band bucket, first < other, each pair once.

        In every bucket each member is paired with the bucket's earliest document only (a star, not all pairs): a
        bucket of m exact copies costs m - 1 checks instead of m(m-1)/2, and the clusters come out the same
        whenever the members are all near-duplicates of that first document."""
        if len(self) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        keys = np.concatenate(self._keys)
        pairs = []
        for band in range(self.bands):
            k = keys[:, band]
            order = np.argsort(k, kind="stable")  # stable: equal keys stay in document order
            k_sorted = k[order]
            run_start = np.concatenate([[True], k_sorted[1:] != k_sorted[:-1]])
            first = order[np.flatnonzero(run_start)][np.cumsum(run_start) - 1]
            member = (first != order) & (k_sorted != 0)
            pairs.append(first[member] * len(keys) + order[member])  # the pair (i, j) as one number: i * n + j
        codes = np.unique(np.concatenate(pairs))
        return np.stack([codes // len(keys), codes % len(keys)], axis=1)

    def _signature_rows(self, idx: np.ndarray) -> np.ndarray:
        """Signatures of documents idx, read from the chunks as added (no copy of the whole index)."""
        first = np.cumsum([0] + [len(s) for s in self._sigs])
        chunk = np.searchsorted(first, idx, side="right") - 1
        out = np.empty((len(idx), self.hasher.num_perm), dtype=self.hasher.dtype)
        for c in np.unique(chunk).tolist():
            here = chunk == c
            out[here] = self._sigs[c][idx[here] - first[c]]
        return out

    def clusters(self, verify_chunk: int = 65536) -> DedupResult:
        """Verify the candidate pairs with the signature estimate of J and join the survivors with union-find."""
        n = len(self)
        pairs = self.candidate_pairs()
        est = np.zeros(len(pairs))
        for i in range(0, len(pairs), verify_chunk):
            p = pairs[i:i + verify_chunk]
            est[i:i + verify_chunk] = jaccard_estimate(self._signature_rows(p[:, 0]), self._signature_rows(p[:, 1]))
        good = est >= self.threshold
        uf = UnionFind(n)
        for i, j in pairs[good].tolist():
            uf.union(i, j)
        similarity = np.zeros(n)  # for reports: the best estimated J of each document with an earlier one
        np.maximum.at(similarity, pairs[good, 1], est[good])
        root = np.arange(n)
        for i in np.unique(pairs[good]).tolist():  # only documents in a verified pair can have another root
            root[i] = uf.find(i)
        return DedupResult(keep=root == np.arange(n), root=root, similarity=similarity,
                           candidates=len(pairs), pairs=pairs[good])


def deduplicate(texts: list[str], threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 0,
                chunk: int = 2048) -> DedupResult:
    """Near-duplicate clusters of an in-memory list of texts (the streaming index, fed in chunks)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, ngram=ngram, seed=seed)
    for i in range(0, len(texts), chunk):
        lsh.add(lsh.signatures(texts[i:i + chunk]))
    return lsh.clusters()
