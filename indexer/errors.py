"""Why a build stops: errors the CLI turns into one line and exit status 2 (no heavy imports here)."""

from cir.errors import OutputError  # noqa: F401 - raised by cir.versioning, caught by the build


class BuildError(RuntimeError):
    """A build cannot proceed; the message says why and what to do. Nothing was published."""
