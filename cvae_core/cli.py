"""What every command line of the project shares."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

# What the operating system accepts in a path, in bytes: one name (Linux's and macOS's file
# systems), and the whole path given to a system call.
NAME_MAX = 255
PATH_MAX = 4096


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `error: PROBLEM`, exit status 2, like every other input error."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def first_line(error: BaseException) -> str:
    """An error's message in one line: its first (a library's can run to a page), or its type's
    name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def number(kind: type = int, at_least: float | None = None, at_most: float | None = None):
    """An argparse type for a bounded number: `error: argument --epochs: 0 must be >= 1`, before
    any data is loaded."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if at_least is not None and value < at_least:
            raise argparse.ArgumentTypeError(f"{value} must be >= {at_least}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"{value} must be <= {at_most}")
        return value

    return parse


def path_problem(text: str, expands: bool = True) -> str | None:
    """Why the operating system would refuse a local path (a file:// URI's too) at the first look at
    it, with a traceback: its length, a NUL character, or (where a leading ~ `expands` to a home
    folder) a ~user it cannot expand; None where it would not, and for other URIs, which are their
    file system's to judge."""
    local = unquote(urlparse(text).path) if text.startswith("file://") else None if "://" in text else text
    if local is None:
        return None
    if "\0" in local:
        return f"{text!r}: holds a NUL character, which no path can"
    expanded = os.path.expanduser(local) if expands else local
    if expands and expanded.startswith("~"):  # left as it was: no such user (or no home), and Path would raise
        return f"{text}: {expanded.split('/')[0]} names no home folder on this machine"
    encoded = os.fsencode(expanded)
    if len(encoded) >= PATH_MAX:
        return f"a path of {len(encoded)} bytes; at most {PATH_MAX - 1}"
    if name := next((name for name in encoded.split(b"/") if len(name) > NAME_MAX), None):
        return f"{os.fsdecode(name[:24])}...: a name of {len(name)} bytes; at most {NAME_MAX}"
    return None


def path(text: str) -> str:
    """An argparse type for a path or a URI whose leading ~ the command expands, as given, once
    path_problem finds nothing wrong with it."""
    if problem := path_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def as_typed(text: str) -> str:
    """An argparse type for a path or a name taken as typed (a ~ in it is a name: a run's name, a
    file the shell left unexpanded), as given, once path_problem finds nothing wrong with it."""
    if problem := path_problem(text, expands=False):
        raise argparse.ArgumentTypeError(problem)
    return text


def local_path(text: str) -> Path:
    """An argparse type for a local file or folder that is read, taken as typed: as_typed's checks, as a Path."""
    return Path(as_typed(text))


def file_in_the_way(folder: Path) -> Path | None:
    """What keeps `folder` from being made: the nearest of it and its parents that exists (or is a
    link to nothing), when that is not a folder; None when it is a folder."""
    there = next(path for path in (folder, *folder.parents) if path.exists() or path.is_symlink())
    return None if there.is_dir() else there


def not_a_folder(file: Path) -> str:
    """What file_in_the_way found, in words."""
    return "is a symbolic link to nothing" if file.is_symlink() and not file.exists() else "is a file, not a folder"


def out_folder(text: str) -> Path:
    """An argparse type for a folder a command writes into: one that exists, or can be made there
    (no file in its place or above it), before anything is computed."""
    if not text.strip():  # Path("") is the working folder
        raise argparse.ArgumentTypeError("an empty path; name a folder")
    out = Path(path(text)).expanduser()
    if (file := file_in_the_way(out)) is not None:
        raise argparse.ArgumentTypeError(f"{text}: {'it' if file == out else file} {not_a_folder(file)}")
    return out


def out_file(text: str) -> Path:
    """An argparse type for a file a command writes: not a folder, and where a file can be made (no
    file in place of a folder above it), before anything is computed."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a file")
    out = Path(path(text)).expanduser()
    if out.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder")
    if (file := file_in_the_way(out.parent)) is not None:
        raise argparse.ArgumentTypeError(f"{text}: {file} {not_a_folder(file)}")
    return out


def device(text: str) -> str:
    """An argparse type for --device: cpu, cuda, cuda:N or mps, one this machine has, before any
    data is loaded (torch is imported only to ask, and only for a GPU)."""
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isascii() and index.isdigit())):
        raise argparse.ArgumentTypeError(f"{text!r} is not cpu, cuda, cuda:N or mps")
    if kind == "cpu":
        return text
    import torch

    count = torch.cuda.device_count() if kind == "cuda" else int(torch.backends.mps.is_available())
    if int(index or 0) >= count:
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} {kind} device(s)")
    return text


class HeldStderr:
    """What C code prints straight to fd 2 (Ray's core: a warning per retry; libjpeg: why it cannot
    write), held back from the user's terminal until `release`, to be read and worded in one line."""

    def __init__(self):
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self._lock = threading.Lock()

    def release(self) -> str:
        """Give fd 2 back (once; from either thread) and return what was printed meanwhile."""
        with self._lock:
            if self._saved is not None:
                sys.stderr.flush()
                os.dup2(self._saved, 2)
                os.close(self._saved)
                self._saved = None
            self._file.seek(0)
            return self._file.read().decode(errors="replace")


def stop_on_sigterm() -> None:
    """SIGTERM (a preempted node, a batch scheduler's stop) acts as Ctrl-C: whatever handles Ctrl-C
    at that moment handles it (Tune saves its state), else KeyboardInterrupt. Also where SIGINT
    itself is ignored, as in a job started with `nohup ... &`."""

    def as_ctrl_c(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    signal.signal(signal.SIGTERM, as_ctrl_c)


# The packages whose loggers the commands show; library code logs to its package's logger
# (logging.getLogger("search") ...), which a notebook can quiet or redirect.
PACKAGES = ("cvae_core", "results", "search")


class _CurrentStdout(logging.StreamHandler):
    """Writes to sys.stdout as it is when a record comes (a test's or a Ray task's redirection),
    not as it was when the handler was made."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _) -> None:
        pass


def show_logs() -> None:
    """How the commands show what the packages log: each message alone on its line on stdout, from
    INFO up, as printed lines. Once per process, however often it is called."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
            logger.addHandler(_CurrentStdout())
        logger.setLevel(logging.INFO)
        logger.propagate = False  # printed once, whatever the root logger does
