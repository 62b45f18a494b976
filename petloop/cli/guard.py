"""The command line's edge: one-line errors, SIGTERM, and checks of options before any work.

Every command error is one line on stderr, ``error: <file or option>: <problem>``, with exit
code 2 and no traceback. Commands report the errors they expect with :func:`fail`; petloop's
own errors (``ValueError`` subclasses defined in petloop, whose messages name the file) and
operating-system errors that name a file are printed the same way by :class:`PetloopGroup`,
which also turns anything unexpected into ``error: unexpected <Type>: <message> (set
PETLOOP_DEBUG=1 for the traceback)``. Click's own usage errors pass through as click prints
them.
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
from typing import NoReturn

import typer
import typer.exceptions
from typer.core import TyperGroup

DEBUG_VARIABLE = "PETLOOP_DEBUG"
DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` (one line) on stderr and exit with code 2."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code=2)


def _debug() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


def _is_petloop_error(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and type(exc).__module__.startswith("petloop.")


def report_error(exc: Exception) -> NoReturn:
    """One line for an error that reached the command line's edge, exit code 2."""
    if _is_petloop_error(exc):
        fail(str(exc))
    if isinstance(exc, OSError) and exc.filename is not None:
        fail(f"{exc.filename}: {exc.strerror or exc}")
    text = one_line(exc)
    fail(f"unexpected {type(exc).__name__}{': ' + text if text else ''} (set "
         f"{DEBUG_VARIABLE}=1 for the traceback)")


# what the command line's own machinery raises (usage errors, --help, exits): left alone;
# typer brings its own copy of click, and its errors derive from TyperException
_PASS_THROUGH = (typer.Exit, typer.Abort, typer.exceptions.TyperException)


class PetloopGroup(TyperGroup):
    """The root command group: every subcommand runs inside its net (see the module)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            if _debug():
                raise
            report_error(exc)


# SIGTERM -------------------------------------------------------------------------------------
_OWNER: list[int] = []  # the process that installed the handler


def _terminate(signum, frame) -> None:
    if os.getpid() not in _OWNER:
        # a forked worker (nnU-Net's preprocessing and data loading fork) inherits the handler;
        # its pool ends it with SIGTERM and expects it to die, not to unwind, so it dies
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise SystemExit(128 + signum)


def install_sigterm() -> None:
    """SIGTERM raises ``SystemExit(143)`` in the main thread of this process, so that
    ``finally`` blocks and the output set's cleanup run (SIGINT already raises
    ``KeyboardInterrupt``); forked child processes keep dying of it as usual."""
    if threading.current_thread() is threading.main_thread():
        _OWNER[:] = [os.getpid()]
        signal.signal(signal.SIGTERM, _terminate)


# options -------------------------------------------------------------------------------------
def check_device(device: str, option: str = "--device", auto: bool = False) -> str:
    """cpu, cuda, cuda:N or mps (and auto where ``auto``); a GPU must be there."""
    if auto and device == "auto":
        return device
    if not DEVICE.fullmatch(device):
        kinds = "cpu, cuda, cuda:N, mps" + (" or auto" if auto else "")
        fail(f"{option}: {device!r} is not a device; use {kinds}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(f"{option}: {device}: no CUDA device is available here; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            fail(f"{option}: {device}: there are only {torch.cuda.device_count()} CUDA "
                 f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            fail(f"{option}: mps: no Apple GPU (MPS) is available here; use --device cpu")
    return device


def positive(value: float | None, option: str) -> None:
    """A finite number above zero (``None``: not given)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        fail(f"{option}: must be a positive number, got {value:g}")


def not_negative(value: float | None, option: str) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        fail(f"{option}: must be a number of at least 0, got {value:g}")


def one_of(value: str | None, option: str, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        fail(f"{option}: {value!r} is not one of {', '.join(choices)}")


def existing_file(path, option: str) -> None:
    if path is not None and not os.path.isfile(path):
        fail(f"{option} {path}: " + ("a folder, not a file" if os.path.isdir(path) else
                                     "no such file"))


def existing_folder(path, option: str) -> None:
    if path is not None and not os.path.isdir(path):
        fail(f"{option} {path}: " + ("a file, not a folder" if os.path.exists(path) else
                                     "no such folder"))
