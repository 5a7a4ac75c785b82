"""imgrade: grade items from photos."""

__version__ = "0.1.0"
