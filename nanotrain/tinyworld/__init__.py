"""Tinyworld, the built-in dataset: a generated little world whose every fact is known, and its gold scorers.

This package is the data, not an algorithm: a learner can skip it on first reading. Its modules import one way:

    world.py     the entities and their facts, the pretraining text
    tasks.py     every chat prompt the generator can emit, each with its oracle answer (a Spec)
    chat.py      the SFT, preference, feedback and evaluation files, sampled from the tasks
    web.py       the web crawl: the pretraining text in HTML pages with boilerplate, plus junk and leaked eval answers
    generate.py  write_world(): every file on disk (python data/tinyworld.py is its CLI)
    gold.py      the gold scorers: the "real human" whose judgement the stages are measured against
"""
