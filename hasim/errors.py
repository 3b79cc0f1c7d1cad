"""The errors hasim reports to a user as one line (exit code 2), never as a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class HasimError(Exception):
    """Bad input: the message names the file, the field and the problem.

    The CLI prints ``str(error)`` on one line and exits with code 2. Anything that is
    not a ``HasimError`` is an internal error (exit code 1).
    """


class ScenarioError(HasimError, ValueError):
    """A scenario file, an inventory or a value given on the command line is invalid."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.field = field
        self.line = line
        where = file or "<scenario>"
        if line is not None:
            where = f"{where}:{line}"
        text = f"{where}: {field}: {problem}" if field else f"{where}: {problem}"
        super().__init__(" ".join(text.split()))


def exit_status(command: Callable[[], object]) -> int:
    """Run a command's body: the exit code it returns (an ``int``; 0 for anything else, its
    result), or, when it raises a :class:`HasimError`, the error's one line on stderr and
    2."""
    try:
        code = command()
    except HasimError as exc:
        print(f"hasim: error: {exc}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
