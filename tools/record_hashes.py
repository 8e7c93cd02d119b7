"""Record the SHA-256 and size of every published MICRA-Net file in the package registry.

Maintenance command, run by hand with network access (or against a mirror)::

    python tools/record_hashes.py                          # download, hash, rewrite the registry
    MICRANET_BASE_URL=http://mirror:8000 python tools/record_hashes.py
    python tools/record_hashes.py --from-folder ~/Downloads  # files fetched with a browser
    python tools/record_hashes.py --dry-run                # print, change nothing

It downloads each published file as is (the archive is not extracted) without
checking it against the current registry, then rewrites
``micranet_utils/_registry.py``. Review the diff before committing: the values
become the truth every user's download is checked against.
"""

import argparse
import hashlib
import pprint
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from micranet_utils.io import registry as _registry
from micranet_utils.io.download import download_file
from micranet_utils.base.errors import MicranetError
from micranet_utils.base.files import write_atomic

HEADER = '"""' + (_registry.__doc__ or "").strip() + '\n"""\n\n'


def sha256_of(path, chunk=1 << 20):
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def find_local(folder, name):
    """`name` under `folder`, as published (with its sub-folders) or by its bare file name."""
    for candidate in (folder / name, folder / Path(name).name):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"record_hashes: {folder}: neither {name} nor {Path(name).name} is there")


def record(home=None, from_folder=None, progress=True):
    """{published name: {"sha256", "size"}} for every published file."""
    table = {}
    for name in _registry.PUBLISHED:
        if from_folder is not None:
            path = find_local(Path(from_folder), name)
        else:
            _registry.PUBLISHED[name] = {"sha256": None, "size": None}  # record, do not check
            path = download_file(name, home, progress=progress)
        table[name] = {"sha256": sha256_of(path), "size": path.stat().st_size}
        print(f"{name}: sha256 {table[name]['sha256']}, {table[name]['size']} bytes", flush=True)
    return table


def registry_source(table):
    """The text of ``_registry.py`` holding `table`."""
    return HEADER + "PUBLISHED = " + pprint.pformat(table, sort_dicts=False, width=110) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=None,
                        help="where to download (default: a temporary folder, removed afterwards)")
    parser.add_argument("--from-folder", type=Path, default=None,
                        help="hash files already downloaded into this folder instead of downloading")
    parser.add_argument("--registry", type=Path, default=Path(_registry.__file__),
                        help="registry file to rewrite (default: the package's _registry.py)")
    parser.add_argument("--dry-run", action="store_true", help="print the hashes, write nothing")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.home is None and args.from_folder is None:
            with tempfile.TemporaryDirectory(prefix="micranet-record-") as scratch:
                table = record(scratch, progress=not args.no_progress)
        else:
            table = record(args.home, args.from_folder, progress=not args.no_progress)
    except MicranetError as err:
        print(f"record_hashes: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(registry_source(table))
    else:
        write_atomic(args.registry, lambda tmp: tmp.write_text(registry_source(table)))
        print(f"wrote {args.registry}; review it with `git diff` before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
