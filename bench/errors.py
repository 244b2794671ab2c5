"""User-facing errors: each renders as one clear line at the CLI, never a traceback."""
from __future__ import annotations

# One family with the trainer's errors (the trainer imports nothing from bench): an error the
# trainer raises for bad input is a BenchError, so the CLI prints it as one line too.
from trainers.errors import ModelNotFoundError, NetworkRequiredError  # noqa: F401
from trainers.errors import UserError as BenchError


class SuiteError(BenchError):
    """A malformed suite file: names the file and the field."""

    def __init__(self, file: str, field: str | None, message: str):
        self.file, self.field, self.message = str(file), field, message
        where = f"{self.file}: {field}: " if field else f"{self.file}: "
        super().__init__(where + message)


class DataError(BenchError):
    """A bad data row or unreadable data source: names the row or the source."""


class SuiteErrors(SuiteError):
    """Several problems found at once (`validate` reports every one): one line each."""

    def __init__(self, errors: list[BenchError]):
        self.errors = list(errors)
        first = self.errors[0]
        self.file, self.field = getattr(first, "file", ""), getattr(first, "field", None)
        self.message = "\n".join(str(e) for e in self.errors)
        BenchError.__init__(self, self.message)

    @property
    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]
