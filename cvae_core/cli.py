"""What every command line of the project shares."""

from __future__ import annotations

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `error: PROBLEM`, exit status 2, like every other input error."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)
