"""seqrec-tui: a Textual app over seqrec_core's public API.

Home (recipes, runs, checkpoints), a training dashboard that follows a run's
``events.jsonl`` (started here as a subprocess, or elsewhere with ``seqrec
run``), GPU gauges, and a recommendation console. Run it as ``seqrec-tui``.
"""

from seqrec_tui.state import LogFollower, RunState

__all__ = ["LogFollower", "RunState"]
