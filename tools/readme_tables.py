"""Regenerate the README's tables from measured results, never by hand.

Usage::

    python tools/readme_tables.py            # rewrite the generated blocks of README.md
    python tools/readme_tables.py --check    # exit 1 if README.md differs from what would be written

Each table sits in README.md between ``<!-- generated: NAME -->`` and
``<!-- end generated: NAME -->``:

* ``comparison`` and ``lessons``: from ``outputs/summary.json``, which
  ``make tutorial`` (``tools/run_lessons.py``) writes;
* ``benchmark-<name>``: from ``benchmarks/results/<name>.json``, which the
  benchmark scripts write. A result taken while the machine was busy (see
  ``benchmarks/harness.py``) is refused: the block is left as it is and the
  script says why, so a figure measured under load never reaches the README.

A block whose source file is missing is left unchanged.
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from micranet_utils.tutorial.comparison import format_table  # noqa: E402

BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)", re.S)


def lessons_table(summary):
    """Seconds and peak memory of each lesson, from ``outputs/summary.json``."""
    lessons = summary.get("lessons", {})
    names = sorted(lessons)
    header = "| lesson | " + " | ".join(name[:2] for name in names) + " |"
    rows = [header, "|---|" + "---|" * len(names)]
    for key, title in (("seconds", "seconds"), ("peak_rss_mb", "peak memory, summed RSS (MB)"),
                       ("peak_pss_mb", "peak memory, summed PSS (MB)"),
                       ("peak_process_rss_mb", "largest process (MB)")):
        values = [lessons[name].get(key) for name in names]
        rows.append(f"| {title} | " + " | ".join("-" if v is None else f"{v:,.0f}" for v in values) + " |")
    mode = "fast" if summary.get("fast_mode") else "full"
    rows.append("")
    rows.append(f"({mode} mode, {summary.get('total_seconds', 0):,.0f} s in all, machine: "
                f"{summary.get('machine', {}).get('cpus', '?')} CPUs, "
                f"{summary.get('machine', {}).get('memory_gb', '?')} GB)")
    return "\n".join(rows)


def benchmark_table(result):
    """One row per variant: median (spread) and speed against the reference."""
    rows = ["| variant | median s | spread s | speed vs reference (range over rounds) |", "|---|---|---|---|"]
    for name, row in result["variants"].items():
        rows.append(f"| {name} | {row['median']:.3f} | {row['low']:.3f} to {row['high']:.3f} | "
                    f"{row['speedup']:.2f}x ({row['speedup_low']:.2f} to {row['speedup_high']:.2f}) |")
    rows.append("")
    rows.append(f"({result['date']}, {result['machine']}, {result['cores']} cores, load average "
                f"{result['load_start']:.2f} at start and {result['load_end']:.2f} at end; settings: "
                + ", ".join(f"{k} {v}" for k, v in result.get("settings", {}).items()) + ")")
    return "\n".join(rows)


def generated(name):
    """The new body of block `name`, or None to leave it (with the reason printed)."""
    if name in ("comparison", "lessons"):
        path = ROOT / "outputs" / "summary.json"
        if not path.is_file():
            print(f"{name}: {path.relative_to(ROOT)} not found (run make tutorial); block left as it is")
            return None
        summary = json.loads(path.read_text())
        if summary.get("fast_mode"):
            print(f"{name}: {path.relative_to(ROOT)} is from a fast-mode run; block left as it is")
            return None
        if name == "comparison":
            return format_table(summary["comparison"]) if "comparison" in summary else None
        return lessons_table(summary)
    if name.startswith("benchmark-"):
        path = ROOT / "benchmarks" / "results" / f"{name[len('benchmark-'):]}.json"
        if not path.is_file():
            print(f"{name}: {path.relative_to(ROOT)} not found; block left as it is")
            return None
        result = json.loads(path.read_text())
        if not result.get("quiet"):
            print(f"{name}: refused: measured while the machine was busy (load average "
                  f"{result.get('load_start')} at start, {result.get('load_end')} at end); block left as it is")
            return None
        return benchmark_table(result)
    print(f"{name}: no generator for this block; left as it is")
    return None


def render(text):
    def replace(match):
        body = generated(match.group("name"))
        if body is None:
            return match.group(0)
        return f"{match.group(1)}{body.rstrip()}\n{match.group(4)}"
    return BLOCK.sub(replace, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{args.readme}: generated tables are out of date; run python tools/readme_tables.py")
            return 1
        return 0
    if new != text:
        tmp = args.readme.with_name(f".{args.readme.name}.tmp")
        tmp.write_text(new)
        tmp.replace(args.readme)
        print(f"{args.readme}: tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
