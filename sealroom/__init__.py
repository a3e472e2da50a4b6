"""sealroom: an end-to-end-encrypted video conference with a Python SFU."""

__version__ = "0.1.0"
