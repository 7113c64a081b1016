"""The errors a user can cause (bad data, a wrong checkpoint, a diverged run): each is one clear sentence.

Scripts run their ``main`` through ``run_script``, which prints these as ``error: ...`` and exits with status 1
instead of a traceback; any other exception is a bug and keeps its traceback.
"""
import os
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
    """A script's entry point: ``main(argv)``, with a user's error as one sentence on stderr and exit status 1.

    A process in a process group (RANK set, as torchrun sets it) then leaves with ``os._exit``, skipping Python's
    shutdown, and with it any ``atexit`` handler (nanotrain registers none). Under --fsdp, torch's DTensor caches
    keep the device mesh, and through it the process group and gloo's worker threads, alive past
    ``destroy_process_group``. A worker thread that is still releasing the tensors of a finished collective when the
    interpreter shuts down asks for the GIL, Python ends that thread with pthread_exit, and the unwinding through C++
    aborts the whole process (std::terminate, SIGABRT) after the run has succeeded: a core dump shows exactly that.
    Every file a run writes is closed by the time ``main`` returns; stdout and stderr are flushed here."""
    try:
        result, status = main(argv), 0
    except (NanotrainError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        result, status = None, 1
    if "RANK" in os.environ:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    if status:
        sys.exit(status)
    return result
