"""``python -m seqrec_tui`` — the same as ``seqrec-tui``."""

from seqrec_tui.app import main

raise SystemExit(main())
