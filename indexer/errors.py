"""Why a build stops: errors the CLI turns into one line and exit status 2 (no heavy imports here)."""


class BuildError(RuntimeError):
    """A build cannot proceed; the message says why and what to do. Nothing was published."""


class OutputError(RuntimeError):
    """The output root cannot be used (unwritable, locked, inconsistent, full)."""
