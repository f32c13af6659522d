"""``python -m cvt_lab.checkpoint``: see :mod:`cvt_lab.checkpoint.cli`."""

from cvt_lab.checkpoint.cli import main

raise SystemExit(main())
