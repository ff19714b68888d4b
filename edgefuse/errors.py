"""Typed errors: each has a stable code, a one-line message and a hint.

The CLI prints `EdgeFuseError.line()` and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeFuseError(Exception):
    """Base error. Subclasses set a default `code`; a call site may pass a more specific one."""

    code = "EF000"

    def __init__(self, message: str, hint: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message.strip().splitlines()[0] if message.strip() else type(self).__name__
        self.hint = hint.strip()
        if code is not None:
            self.code = code

    def line(self) -> str:
        """One line for a terminal: code, message, hint."""
        text = f"error {self.code}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return self.line()


class ConfigError(EdgeFuseError):
    code = "EF100"


class DataError(EdgeFuseError):
    code = "EF200"


class ModelError(EdgeFuseError):
    code = "EF300"


class WeightsError(EdgeFuseError):
    code = "EF310"


class ExportError(EdgeFuseError):
    code = "EF400"


class VerificationError(ExportError):
    code = "EF410"


class CalibrationError(EdgeFuseError):
    code = "EF500"


class QuantizeError(EdgeFuseError):
    code = "EF510"


class ArtifactError(EdgeFuseError):
    code = "EF600"


class RunnerError(EdgeFuseError):
    code = "EF700"


class InputError(RunnerError):
    """Bad input to a runner or the kiosk (names, dtypes, shapes, images, questions)."""

    code = "EF710"


class EngineError(EdgeFuseError):
    code = "EF800"


class TargetError(EdgeFuseError):
    code = "EF810"


class ValidationError(EdgeFuseError):
    """Validation could not run (not a failed gate: a failed gate is a result, exit code 1)."""

    code = "EF900"


def suggest(name: str, choices: Iterable[str]) -> str:
    """Near-miss suggestion for typos: 'did you mean X?' or the list of valid names."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f"did you mean '{close[0]}'? valid: {', '.join(choices)}"
    return f"valid: {', '.join(choices)}"
