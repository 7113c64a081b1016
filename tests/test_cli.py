"""Every script's command line: ``python SCRIPT.py --help`` prints its flags and exits 0 (a literal % in one flag's
help text used to crash train_rm.py's and train_rlhf.py's --help under ArgumentDefaultsHelpFormatter).

    pytest tests/test_cli.py
"""
import runpy
import sys

import pytest

from conftest import ROOT

SCRIPTS = sorted(str(p.relative_to(ROOT)) for pattern in ("*.py", "data/*.py", "bench/*.py") for p in ROOT.glob(pattern))


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_runs(name, monkeypatch, capsys):
    """Run the script as ``python SCRIPT.py --help`` would (its ``__main__`` block, in this process: a subprocess per
    script would cost seconds each)."""
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / name), run_name="__main__")
    out = capsys.readouterr().out
    assert e.value.code in (0, None), out
    assert "usage:" in out and "--help" in out, out


def test_help_shows_a_percent_sign_in_a_flag_help():
    """The escape itself: a help text with % renders as one %."""
    from dataclasses import dataclass

    from nanotrain.cli import _parser, flag

    @dataclass
    class C:
        share: float = flag(0.5, "share of pairs (50% by default)")

    assert "(50% by default)" in _parser(C, None, suppress=False).format_help()
