"""What every benchmark here shares: interleaved runs, medians with their spread, the machine's load.

A benchmark compares variants in one process, on the same inputs. Each round
runs every variant once, in turn, so that a change of load during the run
touches all of them alike; the figure of a variant is the median over the
rounds, with the spread (smallest and largest run), and its ratio to the
reference is the median of the per-round ratios.

The load average is printed when a benchmark starts. A result is *quiet* when
the 1-minute load was below ``QUIET_LOAD_PER_CORE`` per core at the start and
at the end; only quiet results may go into the README
(``tools/readme_tables.py`` refuses the others).

Results are written as JSON to ``benchmarks/results/<name>.json``.
"""

import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
QUIET_LOAD_PER_CORE = 0.75          # 1.5 on 2 cores
MIN_ROUNDS = 5


def cores():
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                  # macOS, Windows
        return os.cpu_count() or 1


def load_average():
    """The 1-minute load average, or None where the system does not give one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def is_quiet(load):
    """True when `load` (1-minute load average) leaves the cores free enough for a figure to publish."""
    return load is not None and load < QUIET_LOAD_PER_CORE * cores()


def announce(title):
    """Print the benchmark's title and the machine's state; returns the load average at the start."""
    load = load_average()
    state = "quiet" if is_quiet(load) else "BUSY: figures are indicative and will not go into the README"
    load_text = "unknown" if load is None else f"{load:.2f}"
    print(f"{title}\nmachine: {platform.machine()}, {cores()} cores, load average {load_text} at start ({state})")
    return load


def interleaved(variants, rounds=MIN_ROUNDS, warmup=1):
    """Run every variant once per round, in turn; seconds per variant and round.

    Parameters
    ----------
    variants : dict of str -> callable
        Each callable takes no argument; its result is ignored.
    rounds : int
        At least :data:`MIN_ROUNDS`.
    warmup : int
        Untimed rounds first (caches, lazy initialisation).

    Returns
    -------
    dict of str -> list of float
    """
    if rounds < MIN_ROUNDS:
        raise ValueError(f"rounds must be at least {MIN_ROUNDS}, got {rounds}")
    for _ in range(warmup):
        for run in variants.values():
            run()
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times, reference):
    """Median, spread and ratio to `reference` of each variant.

    Returns
    -------
    dict of str -> dict
        ``median``, ``low``, ``high`` (seconds) and ``speedup``: the median over
        rounds of reference time / variant time (above 1: faster than the reference),
        with ``speedup_low`` and ``speedup_high``.
    """
    summary = {}
    for name, runs in times.items():
        ratios = [ref / own for ref, own in zip(times[reference], runs)]
        summary[name] = {"median": statistics.median(runs), "low": min(runs), "high": max(runs),
                         "speedup": statistics.median(ratios), "speedup_low": min(ratios),
                         "speedup_high": max(ratios), "runs": runs}
    return summary


def print_table(summary, reference, unit="s"):
    """One line per variant: median (spread) and speed against the reference."""
    print(f"{'variant':34s} {'median ' + unit:>10s} {'spread':>17s} {'vs ' + reference:>22s}")
    for name, row in summary.items():
        print(f"{name:34s} {row['median']:10.3f} {row['low']:8.3f}-{row['high']:<8.3f} "
              f"{row['speedup']:8.2f}x ({row['speedup_low']:.2f}-{row['speedup_high']:.2f})")


def save(name, summary, start_load, settings):
    """Write ``benchmarks/results/<name>.json``; returns its path.

    The result records the load average at the start and at the end, and
    whether both were quiet (see :func:`is_quiet`).
    """
    end_load = load_average()
    result = {"benchmark": name, "date": datetime.date.today().isoformat(), "machine": platform.machine(),
              "cores": cores(), "load_start": start_load, "load_end": end_load,
              "quiet": is_quiet(start_load) and is_quiet(end_load), "settings": settings, "variants": summary}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    os.replace(tmp, path)
    verdict = "quiet" if result["quiet"] else "BUSY (not for the README)"
    print(f"load average at end {end_load:.2f}; {verdict}; written to {path}")
    return path
