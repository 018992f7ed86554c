"""The one error type users see.

Anything a user can cause (a bad file, a bad flag value, a missing checkpoint)
raises a subclass of `UserError` whose message is one line that names the file
or setting and the problem. The CLI prints it without a traceback and exits 1.
"""


class UserError(Exception):
    """An error caused by input the user gave; its message is shown as is."""

    exit_code = 1


class VolumeError(UserError):
    """A NIfTI file that jaxsr cannot use (unreadable, wrong shape, bad values)."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(UserError):
    """An invalid configuration value or command-line setting."""

    exit_code = 2


class CheckpointError(UserError):
    """A missing, unreadable or mismatched checkpoint."""


def one_line(error: BaseException) -> str:
    """A one-line description; UserError messages already name the file."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, UserError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
