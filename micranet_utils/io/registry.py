"""SHA-256 and size of every published MICRA-Net file.

Keys are paths under ``<base URL>/flclab-micranet/``. A value of ``None`` means
"not recorded yet": the file is then downloaded without verification, and the
user is told so once. Maintainers fill this table from a real download with
``python tools/record_hashes.py`` (it rewrites this file; do not edit by hand).
"""

PUBLISHED = {
    "MICRA-Net.tar.gz": {"sha256": None, "size": None},
    "MICRA-Net/models-ilastik/ActinModelZoo-ilastik.hdf5": {"sha256": None, "size": None},
    "MICRA-Net/models-ilastik/CTCModelZoo-ilastik.hdf5": {"sha256": None, "size": None},
}
