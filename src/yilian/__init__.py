"""Yilian (医联): a regional health information platform."""

__version__ = "0.1.0"
