"""The errors a user can cause (bad data, a wrong checkpoint, a diverged run): each is one clear sentence.

Scripts run their ``main`` through ``run_script``, which prints these as ``error: ...`` and exits with status 1
instead of a traceback; any other exception is a bug and keeps its traceback.
"""
import sys


class NanotrainError(Exception):
    """Base class for errors whose message alone tells the user what went wrong and what to do."""


class DataError(NanotrainError, ValueError):
    """Malformed input data; the message names the file and the line."""


class CheckpointError(NanotrainError, ValueError):
    """A checkpoint that is missing, unreadable, or from the wrong stage or tokenizer."""


class NonFiniteLoss(NanotrainError, RuntimeError):
    """The loss became NaN or infinite; the run stopped with the last good checkpoint intact."""


class ConfigError(NanotrainError, ValueError):
    """A combination of flags that cannot work."""


class TokenizerError(NanotrainError, RuntimeError):
    """A vocabulary that cannot be loaded (e.g. GPT-2's BPE offline)."""


def run_script(main, argv=None):
    try:
        return main(argv)
    except (NanotrainError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
