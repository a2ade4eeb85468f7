"""Wall time of training runs from their TensorBoard event files.

  python experiments/run_walltime.py RUN [RUN ...]

Per run: the minutes between the first and last logged step of each event file (one per
resumed piece), summed, with each piece's first and last step. Time shared with other jobs
counts as the run's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader


def pieces(run: str) -> list[tuple[float, float, int, int]]:
    """(first wall time, last wall time, first step, last step) of each event file of RUN."""
    out = []
    for path in sorted(Path(run, "logs").glob("events.out.tfevents.*")):
        logged = [(e.wall_time, e.step) for e in EventFileLoader(str(path)).Load() if e.step]
        if logged:
            out.append((logged[0][0], logged[-1][0], logged[0][1], logged[-1][1]))
    return out


def main(argv=None) -> int:
    for run in argv if argv is not None else sys.argv[1:]:
        found = pieces(run)
        minutes = sum(end - start for start, end, _, _ in found) / 60
        steps = ", ".join(f"{a}-{b}" for _, _, a, b in found)
        print(f"{run}: {minutes:.1f} min (steps {steps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
