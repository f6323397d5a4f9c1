"""iqabench's error classes: the type of an exception says whose mistake it is, not where it was raised.

``UserError`` (and its subclasses) mark the user's or the environment's
mistake, raised where it is detected (a bad spec, an unknown name, missing
weights, an unreadable prompt file): the CLI boundary
(:mod:`iqabench.cli.boundary`) prints its message as one sentence and exits
with :data:`EXIT_USER_ERROR`. Anything else that escapes a command, a plain
``ValueError`` or ``KeyError`` included, is a bug in iqabench or a plugin and
keeps its traceback, as lm-evaluation-harness lets such errors propagate.

Subclasses also derive from the builtin a caller may already catch
(``UserInputError`` is a ``ValueError``, ``UserLookupError`` a ``KeyError``),
so code written against the builtins keeps working. This module imports
nothing: every layer may raise these.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_INCOMPLETE = 3


class IqabenchError(Exception):
    """Base of every error iqabench raises on purpose."""


class UserError(IqabenchError):
    """The user's or the environment's mistake: the message is one sentence saying what to change."""


class UserInputError(UserError, ValueError):
    """A value the user gave (a flag, an option, a spec, a file's content) that cannot be used."""


class UserLookupError(UserError, KeyError):
    """A name the user gave that is not known (a run, a generator, a metric)."""

    def __str__(self) -> str:  # KeyError quotes its message; a sentence reads better bare
        return str(self.args[0]) if self.args else ""


class EnvironmentProblem(UserError, RuntimeError):
    """What the machine lacks (weights, a device, a package), not what the user typed."""
