"""The package's own exception types.

Each family of bad input has one exception class, and every one of them is a
subclass of :class:`ValueError`, so that a notebook can catch ``ValueError``
and the command line can print a single clear line and exit with status 2.
Messages always say *where* (the file, the argument) and *what* was wrong.
"""


class MicranetError(ValueError):
    """Base class of every error this package raises on bad input."""


class ArgumentError(MicranetError):
    """A value given to a command or a function is out of range, or an output folder is unusable."""


class ZooError(MicranetError):
    """A model-zoo HDF5 file is missing, unreadable or not in the published layout."""


class DatasetError(MicranetError):
    """A training-data HDF5 file or a user's dataset folder is not usable."""


class ImageError(MicranetError):
    """An image file cannot be read, or its content cannot be fed to the model."""


class DownloadError(MicranetError):
    """A published file could not be downloaded, verified or extracted."""
