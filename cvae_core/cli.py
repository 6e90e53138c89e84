"""What every command line of the project shares."""

from __future__ import annotations

import argparse
import signal
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `error: PROBLEM`, exit status 2, like every other input error."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


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
