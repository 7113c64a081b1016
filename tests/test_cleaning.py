"""Cleaning: HTML extraction on hand-written pages, the WARC reader on real WARC files, every Gopher rule just
inside and just outside its threshold (values computed by hand), the content filter, exact-dedup normalisation,
13-gram decontamination, bad input reported with file and line, and a deterministic whole run."""
import gzip
import json
import random
import string
import subprocess
import sys
from pathlib import Path

import pytest

from nanotrain.cleaning import Decontaminator, Steps, clean, eval_items, exact_key
from nanotrain.errors import DataError
from nanotrain.extract import Issue, html_to_text, http_response, iter_warc, read_documents, warc_html_pages
from nanotrain.quality import (Blocklist, GopherRules, WordNgrams, content_filter, dup_ngram_char_fraction,
                               gopher_quality, top_ngram_char_fraction, url_domain, words_of)

# ---------------------------------------------------------------------------------------------------------------
# HTML and WARC


def test_html_to_text_keeps_content_and_paragraphs():
    page = """<!DOCTYPE html><html><head><title>Title</title><style>p {color: red}</style>
    <script>var x = "<p>not text</p>";</script></head>
    <body><header><a href="/">Logo</a> <nav><a>Home</a> | <a>About</a></nav></header>
    <main><h1>The   Heading</h1>
    <p>First paragraph &amp; an entity&#8217;s
       line break.</p><p>Second<br>line two<br/>line three</p>
    <ul><li>item one</li><li>item two</li></ul>
    <form><input name=q><button>Search</button>Form words</form>
    <table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>
    <pre>code  keeps
lines</pre></main>
    <aside>Related links</aside><footer>© 2024 Footer</footer><noscript>Enable JS</noscript></body></html>"""
    assert html_to_text(page) == (
        "The Heading\n\nFirst paragraph & an entity’s line break.\n\nSecond\nline two\nline three\n\n"
        "item one\nitem two\n\na b\nc d\n\ncode keeps\nlines")


def test_html_long_header_is_content_and_unclosed_tags_do_not_crash():
    long = " ".join(f"word{i}" for i in range(60))
    assert html_to_text(f"<header><h2>Hero</h2><p>{long}</p></header><p>after</p>") == f"Hero\n\n{long}\n\nafter"
    assert html_to_text("<header><p>short</p></header><p>after</p>") == "after"
    assert html_to_text("<div><p>open <b>bold <i>both</div> tail") == "open bold both\n\ntail"
    assert html_to_text("") == ""


def test_chrome_in_plain_containers_is_dropped_by_its_class_id_or_role():
    page = ("<body><div class='cookie-banner'><p>We use cookies.</p><div>nested <div>deeper</div></div></div>"
            "<div id='main-content'><p>Kept, 'content' saves it.</p></div><div class='social-share'>Share</div>"
            "<section role='dialog'>Subscribe?</section><span class='uui-heroheader08_component'>Hero text</span>"
            "<ul class='related-posts'><li>Read next</li></ul><p>After.</p></body>")
    assert html_to_text(page) == "Kept, 'content' saves it.\n\nHero text\n\nAfter."  # heroheader is no 'header'
    naive = html_to_text(page, remove_boilerplate=False)  # every visible text, chrome too
    assert naive == ("We use cookies.\n\nnested\n\ndeeper\n\nKept, 'content' saves it.\n\nShare\n\nSubscribe?\n\n"
                     "Hero text\n\nRead next\n\nAfter.")
    assert html_to_text("<nav>Home</nav><footer>(c) Site</footer><p>Text</p>", remove_boilerplate=False) == \
        "Home\n\n(c) Site\n\nText"
    # a page whose whole text sits in a container named like chrome keeps it (Readability retries too)
    assert html_to_text("<div class='sidebar'><p>All there is.</p></div><footer>x</footer>") == "All there is."


def test_warc_reader_on_real_files(shared_data):
    expected = {"sample-0000.warc.gz": (48, 22, 22), "sample-0001.warc.gz": (34, 15, 15)}
    for name, (records, responses, html) in expected.items():
        path = shared_data / "web_warc_dolma" / name
        assert sum(1 for _ in iter_warc(path)) == records
        counts, issues = {}, []
        pages = list(warc_html_pages(path, issues, counts=counts))
        assert counts == {"records": records, "responses": responses, "html": html} and not issues
    pages = list(warc_html_pages(shared_data / "web_warc_dolma" / "sample-0001.warc.gz"))
    urls = [rec.url for rec, _ in pages]
    assert urls.count("https://allenai.org/") == 3  # the page fetched three times (dedup demo)
    texts = {rec.url: html_to_text(h) for rec, h in pages}
    assert "Common Crawl is a non-profit foundation" in texts["https://commoncrawl.org/ccbot"]  # chunked + <header>
    assert "Creative Commons" in texts["https://creativecommons.org/mission/"]


def _warc_record(payload: bytes, number: int) -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: <https://ex.org/{number}>\r\n"
            f"Content-Type: application/http;msgtype=response\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload + b"\r\n\r\n"


def test_http_chunked_and_gzip_payloads_and_truncated_warc(tmp_path):
    html = b"<html><body><p>Hello chunked world</p></body></html>"
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (html[:10], html[10:])) + b"0\r\n\r\n"
    resp1 = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    resp2 = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Encoding: gzip\r\n\r\n"
             + gzip.compress("<p>Caf\u00e9 gzip</p>".encode("iso-8859-1")))
    assert http_response(resp1)[2] == html
    data = gzip.compress(_warc_record(resp1, 1)) + gzip.compress(_warc_record(resp2, 2))
    path = tmp_path / "x.warc.gz"
    path.write_bytes(data)
    assert [html_to_text(h) for _, h in warc_html_pages(path)] == ["Hello chunked world", "Café gzip"]
    path.write_bytes(data[:-25])  # cut inside the second record's gzip member
    issues = []
    pages = list(warc_html_pages(path, issues))
    assert len(pages) == 1 and len(issues) == 1 and issues[0].line == 19  # record 2 starts on line 19
    assert issues[0].problem.startswith("corrupt WARC record 2: at byte 284: the file ends inside the record's block")
    assert "the file ends inside the gzip member at compressed byte" in issues[0].problem
    with pytest.raises(DataError, match="x.warc.gz"):
        list(warc_html_pages(path, [], strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Gopher rules: each one isolated (all others skipped), on documents whose metric sits exactly at the threshold
# (kept: the rules remove only when strictly beyond) and one step beyond it (removed).


def unique_words(count: int, length: int = 5, prefix: str = "q") -> list[str]:
    """count distinct alphabetic words of the given length (a prefix letter, then base-26 digits)."""
    out = []
    for i in range(count):
        digits, x = "", i
        for _ in range(length - 1):
            digits, x = string.ascii_lowercase[x % 26] + digits, x // 26
        out.append((prefix + digits)[:length])
    assert len(set(out)) == count
    return out


def only(rule: str) -> GopherRules:
    return GopherRules(skip=frozenset(GopherRules.rule_names()) - {rule})


def verdict(text: str, rule: str):
    r = gopher_quality(text, only(rule))
    assert r is None or r.rule == rule
    return r is None  # True: kept


def test_gopher_word_count_and_word_length():
    assert verdict(" ".join(unique_words(50)), "min_words")
    assert not verdict(" ".join(unique_words(49)), "min_words")
    assert verdict(" ".join(unique_words(100_000, 6)), "max_words")
    assert not verdict(" ".join(unique_words(100_001, 6)), "max_words")
    three = unique_words(60, 3)
    assert verdict(" ".join(three), "min_mean_word_length")  # mean exactly 3
    assert not verdict(" ".join(three[:-1] + ["ab"]), "min_mean_word_length")  # 179/60 < 3
    ten = unique_words(46, 10) + unique_words(14, 11, "z")  # (460 + 154) / 60 > 10 ...
    assert not verdict(" ".join(ten), "max_mean_word_length")
    ten = unique_words(60, 10)  # ... 600 / 60 = 10: kept; punctuation around words is not counted
    assert verdict(" ".join(f"({w})," for w in ten), "max_mean_word_length")


def test_gopher_symbols_bullets_ellipses_alpha_stop_words():
    words = unique_words(60)
    # '#' and ellipses are counted separately: 6 of each per 60 words is 0.1 each, kept; 7 of either, removed
    assert verdict(" ".join(words + ["#"] * 6 + ["..."] * 4 + ["…"] * 2), "max_symbol_word_ratio")
    assert not verdict(" ".join(words + ["#"] * 7), "max_symbol_word_ratio")
    assert not verdict(" ".join(words + ["..."] * 5 + ["…"] * 2), "max_symbol_word_ratio")
    lines = [" ".join(words[i:i + 3]) for i in range(0, 60, 3)]  # 20 lines
    bullets = lambda k: "\n".join(("- " if i < k else "") + l for i, l in enumerate(lines))  # noqa: E731
    assert verdict(bullets(18), "max_bullet_lines") and not verdict(bullets(19), "max_bullet_lines")  # 0.9 / 0.95
    dots = lambda k: "\n".join(l + ("..." if i < k else "") for i, l in enumerate(lines))  # noqa: E731
    assert verdict(dots(6), "max_ellipsis_lines") and not verdict(dots(7), "max_ellipsis_lines")  # 0.3 / 0.35
    numbers = [f"{i:05d}" for i in range(13)]
    assert verdict(" ".join(words[:48] + numbers[:12]), "min_alpha_words")  # 48 / 60 = 0.8
    assert not verdict(" ".join(words[:47] + numbers), "min_alpha_words")  # 47 / 60
    assert verdict(" ".join(words + ["The", "with"]), "min_stop_words")
    assert not verdict(" ".join(words + ["the", "theory"]), "min_stop_words")
    assert not verdict(" ".join(words + ["the", "The", "THE"]), "min_stop_words")  # one word of the list, 3 times


def test_gopher_duplicate_lines_and_paragraphs():
    long = [" ".join(unique_words(10, 5, p)) for p in "abcdefghijklmnop"]  # 59-character lines
    short = "ok go"
    for sep, kind in (("\n", "line"), ("\n\n", "paragraph")):
        # 3 repeats of a short line among 10 lines: fraction 0.3, kept; 4 among 11: 0.36, removed
        kept = [long[0], short, long[1], short, long[2], short, long[3], short, long[4], long[5]]
        gone = kept + [short]
        assert verdict(sep.join(kept), f"max_dup_{kind}_fraction")
        assert not verdict(sep.join(gone), f"max_dup_{kind}_fraction")
        # characters: 2 repeats of a 59-char line among 10 such lines = 118 / 590 = 0.2, kept; of a 60-char line
        # 120 / 593 > 0.2, removed
        rep = long[9]
        kept = long[:7] + [rep, rep, rep]
        assert verdict(sep.join(kept), f"max_dup_{kind}_chars")
        assert not verdict(sep.join(long[:7] + [rep + "x"] * 3), f"max_dup_{kind}_chars")


def _with_repeats(gram: list[str], count: int, filler_chars: int) -> str:
    """`gram` repeated `count` times, separated by distinct 5-letter (one shorter) filler words of the given total
    number of characters."""
    fill = unique_words(filler_chars // 5 + (filler_chars % 5 > 0), 5, "f")
    if filler_chars % 5:
        fill[-1] = fill[-1][:filler_chars % 5]
    words, step = [], -(-len(fill) // count)
    for i in range(count):
        words += gram + fill[i * step:(i + 1) * step]
    return " ".join(words)


@pytest.mark.parametrize("n,limit", [(2, 0.20), (3, 0.18), (4, 0.16)])
def test_gopher_top_ngram_character_fraction(n, limit):
    gram = unique_words(n, 5, "g")  # 5n characters, repeated c times: fraction 5nc / (5nc + filler) = limit
    count = {2: 5, 3: 6, 4: 4}[n]
    filler = round(5 * n * count * (1 / limit - 1))
    assert verdict(_with_repeats(gram, count, filler), f"top_{n}gram_chars")
    assert not verdict(_with_repeats(gram, count, filler - 1), f"top_{n}gram_chars")


@pytest.mark.parametrize("n,limit,lengths", [
    (5, 0.15, [3] * 5), (6, 0.14, [3, 3, 3, 4, 4, 4]), (7, 0.13, [4] * 5 + [3] * 2), (8, 0.12, [3] * 8),
    (9, 0.11, [4] * 6 + [3] * 3), (10, 0.10, [3] * 10)])
def test_gopher_duplicate_ngram_character_fraction(n, limit, lengths):
    # an n-gram of C characters occurring twice: the second occurrence is duplicate, C / (2C + filler) = limit
    gram = [w[:k] for w, k in zip(unique_words(n, 5, "g"), lengths)]
    c = sum(lengths)
    filler = round(c * (1 / limit - 2))
    assert verdict(_with_repeats(gram, 2, filler), f"dup_{n}gram_chars")
    assert not verdict(_with_repeats(gram, 2, filler - 1), f"dup_{n}gram_chars")


def naive_top_ngram(words, n):
    counts = {}  # insertion order = order of first occurrence
    for i in range(len(words) - n + 1):
        counts[tuple(words[i:i + n])] = counts.get(tuple(words[i:i + n]), 0) + 1
    if not counts or max(counts.values()) < 2:
        return 0.0
    gram = max(counts, key=counts.get)  # the first of the most frequent
    return sum(map(len, gram)) * counts[gram] / sum(map(len, words))


def naive_dup_ngram(words, n):
    seen, covered = set(), [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = [True] * n
        seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c) / sum(map(len, words))


def test_ngram_fractions_match_a_naive_implementation():
    rng = random.Random(0)
    for _ in range(40):
        vocab = [f"w{i}" * rng.randint(1, 3) for i in range(rng.randint(2, 30))]
        words = [rng.choice(vocab) for _ in range(rng.randint(1, 200))]
        if rng.random() < 0.5:  # a repeated passage
            words += words[:rng.randint(0, len(words))]
        ng = WordNgrams(words)
        for n in range(2, 11):
            assert top_ngram_char_fraction(ng, n) == pytest.approx(naive_top_ngram(words, n))
            assert dup_ngram_char_fraction(ng, n) == pytest.approx(naive_dup_ngram(words, n))


def test_chinese_words_are_characters_and_the_english_only_rules_pass_chinese_text():
    assert words_of("Tina住在Junebury。她是一名老师！ (ok)") == ["Tina", "住", "在", "Junebury", "她", "是", "一", "名", "老",
                                                                  "师", "ok"]
    zh = ("Nadia住在Ashford。Nadia是一名老师，她每天都认真地工作。Nadia最喜欢的食物是面条。Nadia的好朋友是Omar，"
          "他们常常一起去小河边散步很久。")  # 50 words: 46 Han characters and 4 names; no English stop word, 1.5 long
    assert len(words_of(zh)) == 50 and gopher_quality(zh, GopherRules()) is None
    assert gopher_quality(zh[:-2], GopherRules()).rule == "min_words"  # 49 words
    for rule in ("min_mean_word_length", "min_stop_words", "dup_5gram_chars", "top_2gram_chars"):
        assert verdict(zh * 3, rule)  # measured, but Chinese text passes them
    assert not verdict("\n".join([zh] * 3), "max_dup_line_fraction")  # the language-neutral rules still judge it
    # "Half of the words are Han or kana" makes a text CJK: an English page quoting a few characters is not
    english = " ".join(unique_words(60)) + " 老师 你好"
    assert gopher_quality(english, only("min_stop_words")).rule == "min_stop_words"


def test_gopher_clean_prose_passes_and_the_first_failing_rule_is_reported():
    prose = ("The committee met on Tuesday to discuss the budget for the coming year. Members agreed that the "
             "library needs new shelves, and that the roof of the town hall has to be repaired before winter. "
             "A proposal to build a bicycle path along the river was postponed until more residents have been "
             "asked for their opinion. The treasurer reported that spending stayed within the plan, with a small "
             "surplus carried over from the summer festival.")
    assert gopher_quality(prose, GopherRules()) is None
    assert gopher_quality("Too short.", GopherRules()).rule == "min_words"
    assert gopher_quality("Too short.", GopherRules(skip=frozenset({"min_words"}))).rule == "min_stop_words"


# ---------------------------------------------------------------------------------------------------------------
# Content filter, exact dedup, decontamination


def test_content_filter_words_and_domains():
    bl = Blocklist(words=["casino", "bad phrase"], domains=["spam.example", "adult.test"])
    assert content_filter("Visit our CASINO tonight", None, bl).rule == "blocked_words"
    assert content_filter("a Bad  Phrase here", None, bl) is None  # phrases match as written (one space)
    assert content_filter("a bad phrase here", None, bl).rule == "blocked_words"
    assert content_filter("casinos and xcasino are other words", None, bl) is None
    assert content_filter("fine text", "https://www.spam.example/page", bl).rule == "blocked_domain"
    assert content_filter("fine text", "http://a.b.adult.test:8080/x", bl).detail == "adult.test"
    assert content_filter("fine text", "notspam.example/x", bl) is None
    assert content_filter("casino casino", None, Blocklist(words=["casino"], min_hits=3)) is None
    assert url_domain("Sub.Example.COM/path?q=1") == "sub.example.com"


def test_exact_key_normalises_case_space_and_unicode_forms():
    assert exact_key("Hello  World\n") == exact_key("hello world") == exact_key("ＨＥＬＬＯ world")
    assert exact_key("Hello World") != exact_key("Hello, World")


EVAL_ITEM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?")


def test_decontamination_finds_13_gram_overlaps_and_ignores_near_misses(tmp_path):
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "math.jsonl").write_text(json.dumps({"question": EVAL_ITEM, "id": 1}) + "\n"
                                                   + json.dumps({"question": "Too short to count here."}) + "\n")
    dec = Decontaminator.from_paths([str(tmp_path / "evals")])
    words = EVAL_ITEM.split()
    filler = "Some unrelated words about gardening come first and then"
    docs = [
        f"{filler} {' '.join(words[3:16]).upper()}!!! and more text.",  # 13 words, other case/punctuation: hit
        f"{filler} {' '.join(words[3:15])} and more text.",  # 12 words: a near miss
        f"{filler} {' '.join(words[3:9] + ['seven'] + words[10:17])} end.",  # 14 words with one changed: miss
        "Too short to count here. Too short to count here.",  # eval items under 13 words add nothing
        EVAL_ITEM,
    ]
    hits = dec.check(docs)
    assert hits[0] == (1, "evals/math.jsonl") and hits[1] is None and hits[2] is None and hits[3] is None
    assert hits[4][0] == len(words) - 12


def test_decontamination_by_question_counts_only_ngrams_spanning_question_and_answer(tmp_path):
    story = "One rainy Monday Lena took her red kite to the old bridge and flew it until dark."
    items = [{"prompt": f"Retell this story: {story}", "answer": "Lena flew her kite.", "kind": "retell"},
             {"prompt": "Where does Tom live?", "answer": "Tom lives in Ashford.", "kind": "town"}]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    docs = [f"A page that tells a story. {story} The end.",  # pretraining text a question quotes: not a leak
            "Tom lives in Ashford. Tom is a baker.",  # an answer alone: not a leak
            "Quiz answers: 1. Where does Tom live? Tom lives in Ashford.",  # question and answer together: a leak
            f"{story} Lena flew her kite. And more."]  # the end of the question, then the answer: a leak
    by_question = Decontaminator.from_paths([str(tmp_path / "eval.jsonl")], 8, question="prompt")
    assert [h is not None for h in by_question.check(docs)] == [False, False, True, True]
    whole = Decontaminator.from_paths([str(tmp_path / "eval.jsonl")], 8)  # every n-gram of the item
    assert [h is not None for h in whole.check(docs)] == [True, False, True, True]
    assert eval_items(tmp_path / "eval.jsonl", "prompt")[1] == ("Where does Tom live?", "Tom lives in Ashford.\ntown")


def test_decontamination_reads_the_shared_evaluation_sets(shared_data):
    assert len(eval_items(shared_data / "gsm8k" / "test.jsonl")) == 1319
    assert len(eval_items(shared_data / "truthfulqa" / "TruthfulQA.csv")) == 818  # 817 questions + the header
    assert len(eval_items(shared_data / "mt_bench" / "mt_bench_question.jsonl")) == 80
    dec = Decontaminator.from_paths([str(shared_data / "gsm8k" / "test.jsonl"), str(shared_data / "mt_bench")])
    question = json.loads((shared_data / "gsm8k" / "test.jsonl").open().readline())["question"]
    doc = "A blog post about ducks. " + question + " Thanks for reading."
    assert dec.check([doc, "A blog post about ducks and nothing else at all, really nothing."]) == \
        [(len(question.split()) - 12, "test.jsonl"), None]


# ---------------------------------------------------------------------------------------------------------------
# The pipeline


def _page(i: int, extra: str = "") -> str:
    return (f"Page number {i} tells the story of a town that had to rebuild its bridge after the flood of that "
            f"spring. The mayor asked every family to give one day of work, and the people came with tools and "
            f"food. The new bridge was wider than the old one, and the children painted it blue {extra}. "
            + " ".join(unique_words(40, 6, "abcdefghijklmnop"[i % 16])))


def _corpus(tmp_path):
    good = [{"text": _page(i), "url": f"https://ok.example/{i}", "kind": "clean"} for i in range(8)]
    lines = [json.dumps(r) for r in good]
    lines.insert(2, json.dumps({"text": _page(1), "url": "https://copy.example/1", "kind": "exact"}))
    lines.insert(4, json.dumps({"text": _page(2).replace("blue", "green"), "kind": "near"}))
    lines.insert(5, '{"text": "broken json')
    lines.insert(6, json.dumps({"title": "no text field"}))
    lines.insert(7, json.dumps({"text": "casino " + _page(3), "kind": "blocked"}))
    raw = ("\n".join(lines) + "\n").encode() + b'{"text": "bad \xff utf-8 ' + _page(9).encode() + b'"}\n'
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(raw)
    whole = gzip.compress((json.dumps({"text": _page(10)}) + "\n" + json.dumps({"text": _page(11)}) + "\n").encode())
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(whole[:-30])  # truncated gzip
    (tmp_path / "in" / "c.html").write_text(f"<html><body><nav>menu</nav><p>{_page(12)}</p></body></html>")
    return tmp_path / "in"


def test_bad_input_is_reported_with_file_and_line_and_the_run_goes_on(tmp_path):
    folder = _corpus(tmp_path)
    steps = Steps(blocklist=Blocklist(words=["casino"]))
    rep = clean([str(folder)], tmp_path / "out" / "clean.jsonl", steps, progress=False)
    problems = [str(i) for i in rep.issues]
    assert any(p.startswith(f"{folder / 'a.jsonl'}:6: malformed JSON") for p in problems)
    assert any(p.startswith(f"{folder / 'a.jsonl'}:7: no \"text\"") for p in problems)
    assert any(p.startswith(f"{folder / 'a.jsonl'}:14: invalid UTF-8") for p in problems)
    assert any(p.startswith(f"{folder / 'b.jsonl.gz'}:") and "compressed" in p for p in problems)
    out = [json.loads(line) for line in (tmp_path / "out" / "clean.jsonl").read_text().splitlines()]
    kinds = [r.get("kind") for r in out]
    assert kinds.count("clean") == 8 and "exact" not in kinds and "near" not in kinds and "blocked" not in kinds
    assert all(r["url"].startswith("https://ok.example/") for r in out if r.get("kind") == "clean")  # passed through
    assert any("Page number 12" in r["text"] and "menu" not in r["text"] for r in out)  # the HTML file
    # every document read is accounted for: written, or removed with a reason
    removed = sum(sum(c.values()) for c in rep.removed.values())
    assert rep.entered["extract"] == rep.documents_out + removed
    assert rep.removed["content"]["blocked_words"] == 1 and rep.removed["exact_dedup"]["exact_duplicate"] == 1
    assert rep.removed["near_dedup"]["near_duplicate"] == 1
    md = rep.to_markdown()
    assert "malformed JSON" in md and "| near_dedup |" in md
    with pytest.raises(DataError, match=r"a\.jsonl:6: malformed JSON"):
        clean([str(folder)], tmp_path / "strict" / "clean.jsonl", steps, strict=True, progress=False)


def test_the_whole_cleaning_run_is_deterministic(tmp_path):
    folder = _corpus(tmp_path)
    (tmp_path / "evals.jsonl").write_text(json.dumps({"q": _page(5)[-200:]}) + "\n")  # its own words only
    outputs = []
    for run, workers in enumerate((1, 1, 2)):
        steps = Steps(blocklist=Blocklist(words=["casino"]), decontaminator=Decontaminator.from_paths(
            [str(tmp_path / "evals.jsonl")]))
        out = tmp_path / f"run{run}" / "clean.jsonl"
        rep = clean([str(folder)], out, steps, workers=workers, chunk_docs=3, progress=False)
        outputs.append((out.read_bytes(), rep.to_markdown()))
    assert outputs[0] == outputs[1] == outputs[2]
    assert b"Page number 5 " not in outputs[0][0] and b"Page number 6 " in outputs[0][0]  # decontaminated


def test_read_documents_txt_split(tmp_path):
    (tmp_path / "t.txt").write_text("first para\nline two\n\n\nsecond para\n")
    issues = []
    assert [d.record["text"] for d in read_documents([str(tmp_path / "t.txt")], issues)] == \
        ["first para\nline two\n\n\nsecond para\n"]
    docs = list(read_documents([str(tmp_path / "t.txt")], issues, txt_split="paragraph"))
    assert [(d.record["text"], d.origin.rsplit(":", 1)[1]) for d in docs] == \
        [("first para\nline two", "1"), ("second para", "5")]
    assert not issues and isinstance(Issue("f", 3, "x").__str__(), str)


def test_clean_command_line(tmp_path):
    folder = _corpus(tmp_path)
    out = tmp_path / "out" / "clean.jsonl"
    script = Path(__file__).resolve().parents[1] / "data" / "clean.py"
    run = subprocess.run([sys.executable, str(script), "--input", str(folder), "--out", str(out), "--workers", "2",
                          "--no-progress"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "| near_dedup | 12 | 1 | 11 |" in run.stdout and (out.parent / "report.md").exists()
    assert len(out.read_text().splitlines()) == 11
    bad = subprocess.run([sys.executable, str(script), "--input", str(folder), "--out", str(out), "--skip-rules",
                          "no_such_rule"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown rule" in bad.stderr
