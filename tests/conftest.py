"""Shared pytest setup.

The Triton kernels run on the CPU through Triton's interpreter; the variable must be set before Triton is
imported anywhere, so it is set here, once, for the whole session (it changes nothing on a CUDA machine's
non-Triton paths).
"""
import os
from pathlib import Path

import pytest

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TIKTOKEN_CACHE = ROOT.parent / "shared" / "tiktoken"
if TIKTOKEN_CACHE.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_CACHE))


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data (small real datasets); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
