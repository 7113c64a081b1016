"""Command lines from dataclasses: one dataclass per script, one ``--flag`` per field, ``--help`` shows them all.

A field's help text is given with ``flag(default, "help")``. Underscores become dashes (``batch_size`` ->
``--batch-size``); booleans get ``--x`` / ``--no-x``; an ``X | None`` field accepts ``none``.

    @dataclass
    class Config:
        steps: int = flag(100, "optimizer steps")
    cfg = parse_config(Config)

A config class checks its own flags in ``__post_init__`` (check_counts, check_choice, then check_next for the
config classes it is combined with), so a value no run can use is one sentence before anything loads.

Defaults come from one place each: the dataclass field, or, for a flag the user did not pass, the script's
``defaults(cfg, given)`` function (a preset's value, an algorithm's, or one derived from another flag such as
``--name safe`` -> ``--out out/rm_safe``). A flag given on the command line is never overridden. The resolved
configuration is printed (every value that differs from its field's default, with where it came from) and every
script stores it in its checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing

from nanotrain.errors import ConfigError


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


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _parser(cls, description: str | None, suppress: bool) -> argparse.ArgumentParser:
    """The argparse parser of dataclass ``cls``; with ``suppress``, flags not on the command line stay unset (how
    parse_config tells which flags the user gave)."""
    hints = typing.get_type_hints(cls)
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        name = "--" + f.name.replace("_", "-")
        default = argparse.SUPPRESS if suppress else _default(f)
        tp = hints[f.name]
        helptext = f.metadata.get("help", " ").replace("%", "%%")  # argparse formats help with %
        if tp is bool or tp == (bool | None):
            ap.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=helptext)
        else:
            ap.add_argument(name, type=_parser_for(tp), default=default, help=helptext, metavar=f.name.upper())
    return ap


def parse_config(cls, argv=None, description: str | None = None, defaults=None, show: bool = True):
    """Parse ``argv`` (default: sys.argv) into an instance of dataclass ``cls``.

    ``defaults(cfg, given) -> dict`` supplies values for flags the user did not pass (``given``: the names of the
    fields set on the command line); entries for given flags are ignored. ``show``: print the resolved configuration
    (programs whose output is the model's words, chat.py and sample.py, do not)."""
    ns = _parser(cls, description, suppress=False).parse_args(argv)
    given = set(vars(_parser(cls, description, suppress=True).parse_args(argv)))
    cfg = cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
    resolved = {k: v for k, v in (defaults(cfg, given) if defaults else {}).items() if k not in given}
    cfg = dataclasses.replace(cfg, **resolved)
    if show and int(os.environ.get("RANK", 0)) == 0:
        print(describe_config(cfg, given, set(resolved)))
    return cfg


def describe_config(cfg, given: set = frozenset(), resolved: set = frozenset()) -> str:
    """One line: every field whose value is not its dataclass default, marked "(given)", or "(derived)" when a preset
    or an algorithm chose it."""
    parts = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v != _default(f) or f.name in given:
            src = " (given)" if f.name in given else " (derived)" if f.name in resolved else ""
            parts.append(f"{f.name}={v!r}{src}")
    return f"config: {', '.join(parts) or 'all defaults'}"


def check_counts(cfg, *names: str) -> None:
    """Flags that count something (steps, batch sizes, epochs): below 1 no run can use them, and they would fail
    later as a bare ZeroDivisionError or an empty range."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(cfg, name)}")


def check_choice(value: str, options, name: str) -> None:
    """A flag that names one of a few options (--loss-type dpo | ipo)."""
    if value not in options:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {list(options)}, not {value!r}")


def check_next(cfg, cls) -> None:
    """Run the __post_init__ checks of the config classes after ``cls`` in ``cfg``'s MRO: a script's config inherits
    several (train_rlhf.py: TrainConfig, PPOConfig, DPOConfig, RLAIFConfig), and each checks its own flags."""
    after = getattr(super(cls, cfg), "__post_init__", None)
    if after is not None:
        after()


def config_dict(cfg) -> dict:
    """The config as a plain dict (stored in checkpoints next to the weights)."""
    return dataclasses.asdict(cfg)
