"""The command line's exit codes (kept for scripts that import them here): :mod:`cvt_lab.errors` is their home."""

from __future__ import annotations

from cvt_lab.errors import EXIT_BAD_INPUT as BAD_INPUT
from cvt_lab.errors import EXIT_FAILED as FAILED
from cvt_lab.errors import Exit

__all__ = ["BAD_INPUT", "FAILED", "Exit"]
