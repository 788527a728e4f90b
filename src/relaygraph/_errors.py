"""Exception hierarchy shared by every relaygraph component."""

from __future__ import annotations


class RelaygraphError(Exception):
    """Base class of every error relaygraph raises on purpose."""


class ConfigurationError(RelaygraphError, ValueError):
    """A node, guard or saver was configured with a value that cannot work.

    Raised when the object is constructed (or the graph compiled), never mid-run.
    """


class MissingDependencyError(RelaygraphError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'relaygraph[{extra}]'"
        )
        self.package = package
        self.extra = extra
