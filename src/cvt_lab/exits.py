"""The command line's exit codes: 0 done (or already finished), 2 bad input, 1 a crash or a sweep with failed jobs.

cvt_lab raises :class:`Exit` for every outcome it decides itself. Hydra ends the process with a plain
``SystemExit(1)`` when it refuses the command line or the composed config (an unknown option, a misspelled
key, a wrong type) before any job ran: that is bad input too, so the entry point turns it into exit 2.
"""

from __future__ import annotations

BAD_INPUT = 2
FAILED = 1


class Exit(SystemExit):
    """An exit code decided by cvt_lab (a run's outcome, a sweep's failed jobs), passed through unchanged."""
