"""The memory a photo may take to decode: a module of constants that imports nothing, so that the
command line's parser (``imgrade serve --max-decode-mb``) reads it without loading NumPy or Pillow."""

MB = 1_000_000
"""Bytes in the megabyte of the decode budget (decimal, as ``--max-upload-mb``)."""

DECODE_BUDGET_MB = 300.0
"""The most memory one photo may take to decode, by default: every photo under the 64 MP pixel
limit fits (64 MP at Pillow's 4 bytes a pixel is 256 MB, plus the resize's intermediate), while a
small file that decodes to gigabytes does not. ``imgrade serve --max-decode-mb`` sets it there."""
