"""Kernel: ids, clock, money and error categories shared by every part of Yilian."""
