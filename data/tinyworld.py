"""Generate the built-in default data, a tiny world whose every fact is known (see nanotrain/tinyworld/world.py).

    python data/tinyworld.py                                  # -> data/tinyworld/, seed 0, ~1.5M GPT-2 tokens
    python data/tinyworld.py --out /tmp/tw --seed 1 --scale 0.1 --people 40
    python data/tinyworld.py --help                           # every size flag with its default

Prints what it made: entities, facts, per file the records and GPT-2 tokens (r50k_base via tiktoken; set
TIKTOKEN_CACHE_DIR to a folder holding its BPE file when offline, else it falls back to characters / 4), and the
web crawl's pages per kind.
"""
import time
from collections import Counter
from pathlib import Path

from nanotrain.cli import parse_config
from nanotrain.errors import run_script
from nanotrain.tinyworld.generate import CRAWL, write_world
from nanotrain.tinyworld.world import PERSON_FACTS, World, WorldConfig


def token_counter():
    """GPT-2 token counting, or characters / 4 when tiktoken cannot load its vocabulary (offline)."""
    try:
        import tiktoken
        enc = tiktoken.get_encoding("r50k_base")
        return (lambda text: len(enc.encode_ordinary(text))), "GPT-2 tokens"
    except Exception as e:  # no network and no cache: still report a size
        print(f"note: tiktoken r50k_base unavailable ({type(e).__name__}; offline? set TIKTOKEN_CACHE_DIR to a folder "
              "holding its BPE file); counting characters/4 instead")
        return (lambda text: len(text) // 4), "~tokens (chars/4)"


def texts(record) -> str:
    """All the text in one record (any nesting), for counting tokens."""
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        return "\n".join(texts(v) for k, v in record.items() if k not in ("role", "kind", "split", "lang", "url"))
    if isinstance(record, list):
        return "\n".join(texts(v) for v in record)
    return ""


def main(argv=None):
    cfg = parse_config(WorldConfig, argv, description=__doc__.split("\n")[0])
    t0 = time.time()
    files = write_world(cfg)
    w = World.from_json((Path(cfg.out) / "world.json").read_text(encoding="utf-8"))
    # 6 attributes per person, species / fur / owner per pet, a landmark per town
    n_facts = len(w.people) * len(PERSON_FACTS) + len(w.animals) * 3 + len(w.towns)
    print(f"tinyworld seed {cfg.seed} -> {cfg.out}  ({time.time() - t0:.1f}s)")
    print(f"  {len(w.people)} people ({len(w.split('A'))} in split A, {len(w.split('B'))} in split B), "
          f"{len(w.animals)} pets, {len(w.towns)} towns, {n_facts} facts")
    count, unit = token_counter()
    pages = files.pop("crawl")
    for stem, records in files.items():
        print(f"  {stem + '.jsonl':24s} {len(records):7d} records {count(texts(records)):10,d} {unit}")
    kinds = Counter(pg.kind for pg in pages)
    print(f"  {CRAWL:24s} {len(pages):7d} pages    {(Path(cfg.out) / CRAWL).stat().st_size / 2**20:10.1f} MiB: "
          + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    print(f"  total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    run_script(main)
