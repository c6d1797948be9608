"""Errors edgegen raises. Each message names the problem and the way out."""


class EdgegenError(Exception):
    """Base class for every error edgegen raises on purpose."""


class ArtifactError(EdgegenError):
    """An artifact folder is missing, corrupt, truncated, edited or too new."""


class ModelError(EdgegenError):
    """A source model folder is missing a component or holds one edgegen cannot read."""


class UnsupportedOpError(EdgegenError):
    """A captured graph holds an operator the target cannot lower."""


class InputError(EdgegenError):
    """A runtime input has the wrong name, shape or dtype."""


class ParityError(EdgegenError):
    """An output missed its parity threshold; the message holds the measured figure."""

    def __init__(self, message: str, measured_db: float, threshold_db: float):
        super().__init__(message)
        self.measured_db = measured_db
        self.threshold_db = threshold_db


class BackendUnavailableError(EdgegenError):
    """The backend an artifact names is unknown or cannot run on this machine."""


class MissingDependencyError(EdgegenError):
    """An optional dependency a feature needs is not installed."""


def require(module: str, extra: str):
    """Import an optional dependency or raise an error that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module!r} is not installed; it is needed here. Install it with "
            f"`pip install 'edgegen[{extra}]'`."
        ) from exc


class BudgetError(EdgegenError):
    """No memory plan fits the budget; `smallest` is the least budget one fits (bytes)."""

    def __init__(self, message: str, budget: int, smallest: int):
        super().__init__(message)
        self.budget, self.smallest = budget, smallest
