"""``python -m seqrec_core`` behaves exactly like the ``seqrec`` command."""

from seqrec_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
