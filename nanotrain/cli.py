"""Command lines from dataclasses: one dataclass per script, one ``--flag`` per field, ``--help`` shows them all.

A field's help text is given with ``flag(default, "help")``. Underscores become dashes (``batch_size`` ->
``--batch-size``); booleans get ``--x`` / ``--no-x``; an ``X | None`` field accepts ``none``.

    @dataclass
    class Config:
        steps: int = flag(100, "optimizer steps")
    cfg = parse_config(Config)
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def flag(default, help: str):
    """A dataclass field with a default and a help string for --help."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _parser_for(tp):
    """The callable that turns a command-line string into a value of type ``tp`` (None for 'none' if optional)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        inner = _parser_for(next(a for a in args if a is not type(None)))
        return lambda s: None if s.lower() == "none" else inner(s)
    return tp


def parse_config(cls, argv=None, description: str | None = None):
    """Parse ``argv`` (default: sys.argv) into an instance of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        name = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        tp = hints[f.name]
        helptext = f.metadata.get("help", " ")
        if tp is bool or tp == (bool | None):
            ap.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=helptext)
        else:
            ap.add_argument(name, type=_parser_for(tp), default=default, help=helptext, metavar=f.name.upper())
    ns = ap.parse_args(argv)
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


def config_dict(cfg) -> dict:
    """The config as a plain dict (stored in checkpoints next to the weights)."""
    return dataclasses.asdict(cfg)
