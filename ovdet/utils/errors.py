"""The exceptions ovdet raises for bad user input.

Every error a user can cause (a bad vocabulary, config, image, annotation file, results file or
checkpoint) is an :class:`OvdetError`. Command-line tools catch it and print one line; library
users can catch the base class or a specific subclass.
"""

__all__ = [
    "OvdetError",
    "VocabularyError",
    "ConfigError",
    "DataError",
    "ImageError",
    "CheckpointError",
    "ResultsError",
]


class OvdetError(Exception):
    """Base class of every error caused by bad user input."""


class VocabularyError(OvdetError, ValueError):
    """An empty vocabulary, an empty or duplicated class name, or an unreadable class file."""


class ConfigError(OvdetError, ValueError):
    """An unknown config key, a value of the wrong type, or a missing config file."""


class DataError(OvdetError, ValueError):
    """A malformed annotation file or dataset."""


class ImageError(OvdetError, OSError):
    """A missing, unreadable or undecodable image."""


class CheckpointError(OvdetError, ValueError):
    """A missing, truncated or incompatible checkpoint."""


class ResultsError(OvdetError, ValueError):
    """A malformed COCO-format detection results file."""
