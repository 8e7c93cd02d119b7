"""Write the Colab/Binder badges and the Colab install line into every lesson.

The repository URL is declared once, in pyproject.toml ([project.urls] Repository);
this script derives every link from it. Run it after changing that URL or adding a
lesson; tests/test_lessons.py fails when a lesson's lines are stale.

    python tools/lesson_badges.py          # rewrite notebooks/NN_*.py in place
    python tools/lesson_badges.py --check  # exit 1 when something is stale
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BADGE_MARK = "# [![Open In Colab]"
INSTALL_MARK = 'COLAB_PACKAGE = "'


def repository_url(pyproject=ROOT / "pyproject.toml"):
    """The `Repository` URL of pyproject.toml's [project.urls], without trailing slash."""
    match = re.search(r'^Repository\s*=\s*"([^"]+)"', pyproject.read_text(), flags=re.M)
    if not match:
        raise SystemExit(f"{pyproject}: no 'Repository = \"...\"' line under [project.urls]")
    return match.group(1).rstrip("/")


def badge_line(lesson_name, url=None):
    """Markdown line (as a percent-script comment) with the Colab and Binder badges."""
    url = url or repository_url()
    owner_repo = url.split("github.com/")[-1]
    colab = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{lesson_name}.ipynb"
    binder = f"https://mybinder.org/v2/gh/{owner_repo}/HEAD?labpath=notebooks%2F{lesson_name}.ipynb"
    return (f"# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
            f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder})")


def install_line(url=None):
    """The line of the Colab setup cell naming what pip installs there."""
    url = url or repository_url()
    return f'COLAB_PACKAGE = "micranet-utils @ git+{url}.git"'


def expected_lines(path, url=None):
    return badge_line(path.stem, url), install_line(url)


def refresh(path, url=None):
    """Return the text of `path` with its badge and install lines regenerated."""
    badge, install = expected_lines(path, url)
    out = []
    for line in path.read_text().splitlines():
        if line.startswith(BADGE_MARK):
            line = badge
        elif line.lstrip().startswith(INSTALL_MARK):
            line = line[: len(line) - len(line.lstrip())] + install
        out.append(line)
    return "\n".join(out) + "\n"


def lessons():
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    stale = []
    for path in lessons():
        text = refresh(path)
        badge, install = expected_lines(path)
        if badge not in text or install not in text:
            stale.append(f"{path.name}: missing the badge line or the COLAB_PACKAGE line")
        elif text != path.read_text():
            stale.append(f"{path.name}: badge or install line out of date")
            if "--check" not in argv:
                path.write_text(text)
    for line in stale:
        print(line)
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main())
