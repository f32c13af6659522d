"""Every outcome cvt_lab decides itself: the error types of a job and the command line's exit codes.

Exit codes: 0 done (or already finished), :data:`EXIT_BAD_INPUT` (2) bad input, one message naming the problem
and the fix; :data:`EXIT_FAILED` (1) a crash, a sweep with failed jobs, or a run ended by a signal
(:class:`RunInterrupted`). Hydra ends the process with a plain ``SystemExit(1)`` when it refuses the command
line or the composed config before any job ran: that is bad input too, so the entry point turns it into 2.

The bottom of the package: it imports nothing of cvt_lab, so every layer can raise these.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException, InstantiationException

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class Exit(SystemExit):
    """An exit code decided by cvt_lab (a run's outcome, a sweep's failed jobs), passed through unchanged."""


class JobError(RuntimeError):
    """Bad input to a job (config, data, checkpoint, run directory): one message naming the problem and the fix."""


class RunDirError(RuntimeError):
    """The run directory cannot be used: it cannot be written, or another run owns it."""


class RunDirBusy(RunDirError):
    """Another process owns the run directory (it holds its lock)."""


class RunDirTaken(JobError):
    """The run directory holds another config's run: it is left untouched."""


class RunInterrupted(RuntimeError):
    """A signal (SIGTERM from a scheduler or a shell, SIGINT) ended the run; its checkpoints stay, a rerun resumes."""

    def __init__(self, signal_name: str):
        super().__init__(f"interrupted by {signal_name}; rerun the same command to resume from its last checkpoint")
        self.signal_name = signal_name


class JobFailed(CompactHydraException):
    """A job of a sweep failed (its record holds the error); Hydra marks the job failed and the sweep goes on."""


def bad_input_types() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (config, data path, checkpoint) rather than a bug: reported as one message.
    A function, so that importing this module does not import Lightning (whose exception joins the list)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    return JobError, RunDirError, ValueError, FileNotFoundError, KeyError, MisconfigurationException


def as_job_error(error: BaseException) -> BaseException:
    """The error to report: the one ``hydra.utils.instantiate`` wrapped, bad input as one :class:`JobError`."""
    from urllib.error import URLError

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, URLError):  # the only network access is torchvision's download
        return JobError(f"cannot download the dataset ({error.reason}): data.download=true needs the network; "
                        "put a local copy under data.root and set data.download=false")
    if isinstance(error, bad_input_types()) and not isinstance(error, JobError):
        return JobError(str(error) or type(error).__name__)
    return error


def message_of(error: BaseException) -> str:
    """One line for an error: a bad input's message, or a crash's type and message; notes appended."""
    text = str(error) or type(error).__name__
    if not isinstance(error, JobError | RunInterrupted):
        text = f"{type(error).__name__}: {text}"
    return "; ".join([text, *getattr(error, "__notes__", [])])


def exit_code_of(error: BaseException) -> int:
    """The exit code of a run that ended with ``error``: bad input 2, anything else (a crash, a signal) 1."""
    return EXIT_BAD_INPUT if isinstance(error, JobError) else EXIT_FAILED
