"""The names scripts imported from ``cvt_lab.train`` before the run lifecycle was split, each from its home:

- :mod:`cvt_lab.errors`: ``JobError``, ``RunDirTaken``, ``JobFailed``, ``as_job_error``, ``message_of``
  (``BAD_INPUT`` here is the tuple of bad-input exception types, ``cvt_lab.errors.bad_input_types()``);
- :mod:`cvt_lab.building`: ``build``, ``build_callbacks``, ``trainer_node``;
- :mod:`cvt_lab.job`: ``run``, ``claim``, ``check_inputs``, ``resume_checkpoint``, ``launched_as_rank_zero``,
  ``record_failure``, ``prereg_of``;
- :mod:`cvt_lab.rundir`: ``is_readable_checkpoint``;
- :mod:`cvt_lab.modes`: ``fit_and_test`` (what ``train`` did, returning the metrics instead of filling a record).
"""

from __future__ import annotations

from cvt_lab.building import build, build_callbacks, trainer_node
from cvt_lab.errors import JobError, JobFailed, RunDirTaken, as_job_error, bad_input_types, message_of
from cvt_lab.job import (check_inputs, claim, launched_as_rank_zero, prereg_of, record_failure, resume_checkpoint,
                         run)
from cvt_lab.modes import fit_and_test
from cvt_lab.rundir import is_readable_checkpoint

BAD_INPUT = bad_input_types()

__all__ = ["BAD_INPUT", "JobError", "JobFailed", "RunDirTaken", "as_job_error", "build", "build_callbacks",
           "check_inputs", "claim", "fit_and_test", "is_readable_checkpoint", "launched_as_rank_zero", "message_of",
           "prereg_of", "record_failure", "resume_checkpoint", "run", "trainer_node"]
