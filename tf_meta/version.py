"""The library's version: recorded in every run folder's flags.txt and every export."""

VERSION = "0.1.0"
