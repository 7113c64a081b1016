"""Tinyworld's web crawl: the pretraining documents inside HTML pages, with the junk every cleaning step exists for.

The pipeline pretrains on what data/clean.py keeps of this crawl, so the crawl carries every pretraining document
(world.pretrain_docs), each exactly once on a *content page*: consecutive documents of one language are grouped into
pages of at least PAGE_MIN_WORDS words (at most PAGE_MAX_DOCS documents, a page of fact cards also gets some prose,
and two documents that share many word 5-grams, such as two stories from one template, go to different pages), as a
news site prints several short items on one page. English content pages have kind "clean", Chinese ones "zh" (the
world's minority language: cleaning must keep them). Every page is wrapped in its site's chrome: a header with the
site's name, navigation, a cookie banner, breadcrumbs, a share bar, "Read next" links, a footer; part of it in the
elements a text extractor drops (nav, footer, header), part in plain <div>s named like chrome (class="cookie-banner").

Junk pages, at the rates of JUNK_RATES (pages per 100 content pages, times --crawl-junk), each with its true kind:

    exact_dup       a mirror or reprint: a content page again, in another site's chrome
    near_dup        a re-crawl: an English content page with a dateline and an update note added (the MinHash
                    shingles are white-space words, so Chinese re-crawls would be out of near-dedup's reach)
    spam            a keyword list for the deals on some item ("cheap kite best kite deals ...")
    blocklist       fluent promotion for an online casino and the like: passes the quality rules, carries
                    blocklisted words
    short           a fragment: "Page not found.", "Loading..."
    symbols, lorem, code, repeated_lines, ellipsis      symbol soup, placeholder text, a script shown as text,
                    one line many times, a listing of lines cut off with "..."
    eval_leak       an "answer key": QUIZ_PER_PAGE held-out evaluation questions, each followed by its oracle answer
                    (test-set contamination). --leak-share of the English, non-harmful questions of eval_b and
                    eval_prompts are leaked, each on LEAK_COPIES different pages; the others never appear anywhere.

Besides, VIRAL_RATE of the English content pages (at least 2, of VIRAL_MIN_WORDS words or more) are mirrored
VIRAL_COPIES times each (kind exact_dup): the documents duplicated many times in the raw crawl, whose memorisation
bench/bench_cleaning.py measures (Lee et al. 2021). All pages are shuffled, so a copy can come before its original.

``write_warc`` stores the pages as WARC/1.0 response records, one gzip member per record (as Common Crawl does).
The truth about each page travels outside its text, in WARC headers that nanotrain.extract turns into record fields
and no cleaning step reads: ``WARC-Tinyworld-Kind`` (nanotrain/truth_scores.py scores the steps by it) and
``WARC-Tinyworld-Page``, the content page a page carries or copies (-1 for none).

    python data/tinyworld.py --out data/tinyworld     # writes data/tinyworld/crawl.warc.gz among the other files
"""
from __future__ import annotations

import gzip
import hashlib
import html
import random
import re
import uuid
from dataclasses import dataclass

from nanotrain.tinyworld.world import DAYS, ITEMS, TOWNS, World, WorldConfig

PAGE_MIN_WORDS = 80  # words per content page at least (a Chinese character counts as a word); Gopher wants 50
PAGE_MAX_DOCS = 5
JUNK_RATES = {"exact_dup": 6, "near_dup": 4, "spam": 2, "blocklist": 3, "short": 2, "symbols": 0.5, "lorem": 0.5,
              "code": 0.5, "repeated_lines": 0.5, "ellipsis": 0.5}  # pages per 100 content pages
# A few pages copied very often: Lee et al. 2021 find single sequences repeated thousands of times in C4.
VIRAL_RATE, VIRAL_COPIES, VIRAL_MIN_WORDS = 0.001, 96, 100  # long enough for a 32-token prompt + a 50-token span
QUIZ_PER_PAGE, LEAK_COPIES = 8, 16  # answer keys get copied around: each leaked question is on 16 pages
# Decontaminating the crawl (pipeline.py, bench/bench_cleaning.py): against every held-out file, where a page quotes
# a question together with its answer: 8-grams (PaLM's contamination analysis, Chowdhery et al. 2022, sec. 8; most
# of the world's questions and answers together are under 13 words) that span the question ("prompt") and the rest
# of the item, since the world's "retell" questions quote stories its pretraining text tells (nanotrain/cleaning.py).
EVAL_FILES = ("eval_b", "eval_zh", "eval_prompts", "eval_harmful", "eval_benign", "eval_unknown")
DECONTAM_NGRAM, DECONTAM_QUESTION = 8, "prompt"

# ----------------------------------------------------------------------------------------------------------
# Site chrome. BOILERPLATE_MARKERS are phrases only the chrome contains (never a document): what the cleaning bench
# counts in samples.

@dataclass(frozen=True)
class Site:
    name: str
    domain: str
    tagline: str
    nav: tuple
    cookie: str
    share: str
    read_next: str
    footer: tuple
    lang: str = "en"


SITES_EN = [
    Site("Tinyworld Gazette", "tinyworld-gazette.example", "News from every town",
         ("Home", "News", "Towns", "People", "Pets", "About"),
         "We use cookies to improve your experience. By using this site you accept our use of cookies.",
         "Share this story: Facebook | Twitter | Email", "Read next",
         ("© 2024 Tinyworld Gazette. All rights reserved.", "Privacy policy | Terms of use | Sitemap")),
    Site("Town News", "town-news.example", "Your town, every day", ("Home", "Local", "Events", "Weather", "Contact"),
         "This website uses cookies. Accept all cookies or manage your cookie settings.",
         "Share: Facebook · Twitter · Copy link", "Read next",
         ("© 2024 Town News. All rights reserved.", "Subscribe to our newsletter", "Terms of use | Privacy policy")),
    Site("Pets Weekly", "pets-weekly.example", "All about the animals of Tinyworld",
         ("Home", "Dogs", "Cats", "Other pets", "Vets"),
         "Pets Weekly uses cookies for analytics. Accept cookies?", "Share this page: Facebook | Email",
         "Read next", ("© 2024 Pets Weekly. All rights reserved.", "Sitemap | Privacy policy")),
    Site("The Harbour Herald", "harbour-herald.example", "Since 1921",
         ("Front page", "Stories", "Letters", "Archive", "Subscribe"),
         "We use cookies to improve your experience. Accept all cookies.", "Share this story: Twitter | Email",
         "Read next", ("© 2024 The Harbour Herald. All rights reserved.", "Privacy policy | Terms of use")),
]
SITES_ZH = [
    Site("小镇日报", "xiaozhen-daily.example", "每天都有小镇新闻", ("首页", "新闻", "小镇", "宠物", "关于我们"),
         "本网站使用Cookie来改善您的体验。继续浏览即表示您同意我们使用Cookie。", "分享到：微信 | 微博 | 复制链接",
         "相关阅读", ("© 2024 小镇日报 版权所有", "隐私政策 | 使用条款 | 网站地图"), "zh"),
    Site("宠物周刊", "chongwu-weekly.example", "小镇宠物的故事", ("首页", "狗", "猫", "其他宠物"),
         "我们使用Cookie进行统计分析。是否接受Cookie？", "分享到：微信 | 微博", "相关阅读",
         ("© 2024 宠物周刊 版权所有", "隐私政策 | 网站地图"), "zh"),
]
BOILERPLATE_MARKERS = ("cookie", "all rights reserved", "share this", "share:", "privacy policy", "terms of use",
                       "read next", "sitemap", "newsletter", "版权所有", "分享到", "相关阅读", "隐私政策")
READ_NEXT_EN = ["More news from {town}", "Five things to do in {town}", "Meet the pets of {town}",
                "The weather in {town} this {day}", "Letters from {town}", "A walk around {town}"]
READ_NEXT_ZH = ["{town}的新闻", "{town}有什么好玩的", "{town}的宠物", "{town}的天气"]


def _p(text: str) -> str:
    """A paragraph; its lines separated by <br>, so that text extraction gives the text back exactly."""
    return "<p>" + "<br>".join(html.escape(line, quote=False) for line in text.split("\n")) + "</p>"


def body_html(text: str) -> str:
    """The article: each blank-line separated paragraph of text as a <p>."""
    return "".join(_p(para) for para in text.split("\n\n"))


def render(site: Site, body: str, rng: random.Random, title: str) -> str:
    """A whole HTML page: the site's chrome (each optional piece present or not, at random) around the article."""
    e = html.escape
    town, day = rng.choice(TOWNS), rng.choice(list(DAYS))
    nav = "<nav><ul>" + "".join(f'<li><a href="/{i}">{e(x)}</a></li>' for i, x in enumerate(site.nav)) + "</ul></nav>"
    head = f'<header class="site-header"><a class="logo" href="/">{e(site.name)}</a> <span>{e(site.tagline)}</span>'
    out = [f'<!DOCTYPE html><html lang="{site.lang}"><head><meta charset="utf-8"><title>{e(title)}</title>'
           '<link rel="stylesheet" href="/static/site.css"><script>window.dataLayer = window.dataLayer || [];'
           "</script></head><body>", head + (nav + "</header>" if rng.random() < 0.5 else "</header>" + nav)]
    if rng.random() < 0.7:
        out.append(f'<div class="cookie-banner"><p>{e(site.cookie)}</p><button>OK</button></div>')
    if rng.random() < 0.5:
        out.append(f'<div class="breadcrumbs">{e(site.nav[0])} › {e(rng.choice(site.nav[1:]))}</div>')
    out.append(f"<main><article>{body}</article>")
    if rng.random() < 0.6:
        out.append(f'<div class="social-share">{e(site.share)}</div>')
    if rng.random() < 0.6:
        links = rng.sample(READ_NEXT_ZH if site.lang == "zh" else READ_NEXT_EN, 3)
        out.append(f'<div class="related-posts"><h3>{e(site.read_next)}</h3><ul>'
                   + "".join(f'<li><a href="/r{i}">{e(x.format(town=town, day=day))}</a></li>'
                             for i, x in enumerate(links)) + "</ul></div>")
    out.append("</main><footer>" + "".join(f"<p>{e(x)}</p>" for x in site.footer) + "</footer></body></html>")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------
# Content pages

_CJK = re.compile("[\u4e00-\u9fff]")


def _zh(doc: str) -> bool:
    return bool(_CJK.search(doc))


def _words(doc: str) -> list[str]:
    """White-space words; in Chinese, each Han character and each run of latin letters or digits (the grouping's
    own count; the cleaner has its own)."""
    return re.findall(r"[\u4e00-\u9fff]|[A-Za-z0-9]+", doc) if _zh(doc) else doc.split()


def group_documents(docs: list[str]) -> list[list[int]]:
    """Content pages as lists of document indices, every document on exactly one page (see the module docstring)."""
    pages, open_pages = [], []  # open: [indices, words, 5-grams, has prose, is Chinese]
    for i, doc in enumerate(docs):
        words, zh = _words(doc), _zh(doc)
        grams = {tuple(words[j:j + 5]) for j in range(len(words) - 4)}
        prose = "\nHome town: " not in doc  # a fact card is a list; a page of cards alone reads as one
        for pg in open_pages:
            if pg[4] == zh and not (grams and len(grams & pg[2]) > 0.1 * len(grams)):
                break
        else:
            pg = [[], 0, set(), False, zh]
            open_pages.append(pg)
        pg[0].append(i)
        pg[1] += len(words)
        pg[2] |= grams
        pg[3] |= prose
        if (pg[1] >= PAGE_MIN_WORDS and pg[3]) or len(pg[0]) >= PAGE_MAX_DOCS:
            pages.append(pg)
            open_pages.remove(pg)
    for pg in open_pages:  # the pages still short at the end join the last full page of their language
        last = next((q for q in reversed(pages) if q[4] == pg[4]), None)
        if last is None:
            pages.append(pg)
        else:
            last[0] += pg[0]
    return [pg[0] for pg in pages]


# ----------------------------------------------------------------------------------------------------------
# Junk

SPAM = ["cheap {item}", "best {item} deals", "buy {item} now", "{item} sale {town}", "{item} discount", "free {item}"]
PROMO = ["Welcome to the best online casino in {town}.", "Join tonight and get a bonus of {n} coins at our casino.",
         "Our casino is open all night, and the games are fun for everyone.", "Play the slots and win a new {item}!",
         "Thousands of players from {town} trust our casino with their money.",
         "Try our xxx videos, free for the first {n} days.", "Buy viagra online at the lowest price in {town}.",
         "Discreet delivery of viagra to every town, with free shipping.",
         "The jackpot is {n} coins this week, so do not miss it.",
         "Sign up with your email and we will send you a gift."]  # casino, viagra, xxx: data/blocklist_words.txt
SHORT = ["Page not found.", "Loading...", "Subscribe now!", "Next page >>", "403 Forbidden", "Click here to continue."]
CODE = ("function track(user) {\n  var id = document.cookie;\n  if (id) { send(id); }\n}\n"
        "window.onload = function() { track(window.user); };")
LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore."
QUIZ_INTRO = ("Here are the answers to this week's Tinyworld quiz. Check how many you got right, and share your score "
              "with your friends.")


def junk_body(kind: str, rng: random.Random, source: str = "") -> str:
    """The article text of a junk page of ``kind`` (source: the content page it is made from, where it has one)."""
    town, item, n = rng.choice(TOWNS), rng.choice(list(ITEMS)), rng.choice([50, 100, 500, 1000])
    if kind == "spam":
        return " ".join(rng.choice(SPAM).format(item=item, town=town) for _ in range(rng.randint(30, 60))) + \
            " CLICK HERE!!!"
    if kind == "blocklist":
        return "\n\n".join(s.format(town=town, item=item, n=n) for s in rng.sample(PROMO, rng.randint(5, 8)))
    if kind == "short":
        return rng.choice(SHORT)
    if kind == "symbols":
        return " ".join("".join(rng.choice("#$%&*@!^~<>{}[]|=+") for _ in range(rng.randint(3, 9)))
                        for _ in range(rng.randint(30, 60)))
    if kind == "lorem":
        return " ".join([LOREM] * rng.randint(4, 8))
    if kind == "code":
        return "\n".join([CODE] * rng.randint(2, 4))
    if kind == "repeated_lines":
        return "\n".join([source.split("\n")[0]] * rng.randint(8, 15))
    if kind == "ellipsis":  # a listing of every sentence, each cut off
        return "\n".join(s[:rng.randint(20, 40)] + "..." for s in re.split(r"(?<=\.) ", source) if len(s) > 40)
    raise ValueError(kind)


def quiz_pages(evals: list[dict], share: float, rng: random.Random) -> list[list[dict]]:
    """The leaked questions' answer keys: ``share`` of the English, non-harmful eval records, each on LEAK_COPIES
    pages of about QUIZ_PER_PAGE different questions."""
    pool = [r for r in evals if r["lang"] == "en" and not r["harmful"]]
    leaked = rng.sample(pool, round(share * len(pool)))
    n = max(1, len(leaked) // QUIZ_PER_PAGE)
    pages = []
    for _ in range(LEAK_COPIES if leaked else 0):  # each round puts every leaked question on one page, in a new order
        order = rng.sample(leaked, len(leaked))
        pages += [order[i::n] for i in range(n)]
    return pages


# ----------------------------------------------------------------------------------------------------------
# The crawl

@dataclass
class Page:
    url: str
    html: str
    kind: str  # the truth: clean, zh, or a junk kind
    page: int  # the content page it carries or copies; -1 for none
    date: str


def crawl_pages(w: World, cfg: WorldConfig, docs: list[str], evals: list[dict]) -> list[Page]:
    """Every page of the crawl, shuffled: the content pages, then the junk (``evals``: the held-out eval records
    that may leak)."""
    rng = random.Random(f"tinyworld-{cfg.seed}-crawl")
    groups = group_documents(docs)
    texts = ["\n\n".join(docs[i] for i in g) for g in groups]
    english = [p for p, t in enumerate(texts) if not _zh(t)]
    counter = iter(range(10 ** 9))

    def page(kind: str, body: str, source: int = -1, zh: bool = False) -> Page:
        site = rng.choice(SITES_ZH if zh else SITES_EN)
        i = next(counter)
        title = f"{site.name} - {rng.choice(TOWNS)}"
        date = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{i % 60:02d}:00Z"
        return Page(f"https://{site.domain}/{rng.choice(['news', 'towns', 'people', 'pets'])}/{i:06d}.html",
                    render(site, body, rng, title), kind, source, date)

    pages = [page("zh" if _zh(t) else "clean", body_html(t), p, _zh(t)) for p, t in enumerate(texts)]
    n = len(texts) * cfg.crawl_junk / 100
    long = [p for p in english if len(_words(texts[p])) >= VIRAL_MIN_WORDS]
    viral = rng.sample(long, min(len(long), max(2, round(VIRAL_RATE * len(texts)))))
    for p in viral:
        pages += [page("exact_dup", body_html(texts[p]), p) for _ in range(VIRAL_COPIES)]
    for kind, rate in JUNK_RATES.items():
        for _ in range(max(1, round(rate * n))):
            p = rng.randrange(len(texts)) if kind == "exact_dup" else rng.choice(english)
            if kind == "exact_dup":
                body = body_html(texts[p])
            elif kind == "near_dup":
                day, later = rng.sample(list(DAYS), 2)
                body = body_html(f"Posted on {day}.\n\n{texts[p]}\n\nUpdated on {later}: a spelling mistake was "
                                 "fixed.")
            else:
                body, p = body_html(junk_body(kind, rng, texts[p])), (p if kind in ("repeated_lines", "ellipsis")
                                                                        else -1)
            pages.append(page(kind, body, p, kind == "exact_dup" and _zh(texts[p])))
    for qas in quiz_pages(evals, cfg.leak_share, rng):
        lines = "\n".join(f"{i}. {r['prompt']} {r['answer']}" for i, r in enumerate(qas, 1))
        pages.append(page("eval_leak", body_html(f"{QUIZ_INTRO}\n\n{lines}")))
    rng.shuffle(pages)
    return pages


def _record(headers: list[tuple[str, str]], block: bytes) -> bytes:
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + f"Content-Length: {len(block)}\r\n\r\n"
    return gzip.compress(head.encode("utf-8") + block + b"\r\n\r\n", mtime=0)  # one member per record


def write_warc(path, pages: list[Page], seed: int) -> None:
    """The crawl as a WARC/1.0 file: a warcinfo record, then one response record per page (byte-identical for a
    seed: record ids come from it)."""
    def rid(i: int) -> str:
        return f"<urn:uuid:{uuid.UUID(bytes=hashlib.sha256(f'tinyworld-{seed}-{i}'.encode()).digest()[:16])}>"

    info = b"software: nanotrain tinyworld\r\nformat: WARC File Format 1.0\r\n"
    with open(path, "wb") as f:
        f.write(_record([("WARC-Type", "warcinfo"), ("WARC-Record-ID", rid(-1)), ("WARC-Date", "2024-01-01T00:00:00Z"),
                         ("Content-Type", "application/warc-fields")], info))
        for i, pg in enumerate(pages):
            payload = pg.html.encode("utf-8")
            block = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(payload)}"
                     "\r\n\r\n").encode() + payload
            f.write(_record([("WARC-Type", "response"), ("WARC-Record-ID", rid(i)), ("WARC-Date", pg.date),
                             ("WARC-Target-URI", pg.url), ("Content-Type", "application/http; msgtype=response"),
                             ("WARC-Tinyworld-Kind", pg.kind), ("WARC-Tinyworld-Page", str(pg.page))], block))
