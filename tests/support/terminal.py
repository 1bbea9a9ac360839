"""Run a ``yilian`` command as an operator does, with stderr on a terminal (a pseudo-terminal),
so that Rich draws its progress bars; and read back what was drawn, per bar."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class TerminalRun:
    returncode: int
    stdout: str
    drawn: str  # stderr as the terminal received it, without control sequences

    def last_counts(self, *stages: str) -> dict[str, tuple[int, int]]:
        """The last ``done/total`` drawn for each named bar (a bar that never drew is absent)."""
        pattern = re.compile(r"\s*(" + "|".join(map(re.escape, stages)) + r")\b.*?(\d+)/(\d+)")
        out: dict[str, tuple[int, int]] = {}
        for line in re.split(r"[\r\n]", self.drawn):
            if m := pattern.match(line):
                out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
        return out


def run_on_terminal(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> TerminalRun:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "yilian.cli.main", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "120", **(env or {})},
        )
        os.close(terminal)
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal was closed: the command is done with it
                break
            if not data:
                break
            chunks.append(data)
        stdout, _ = proc.communicate(timeout=timeout)
    finally:
        os.close(controller)
    drawn = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    return TerminalRun(proc.returncode, stdout.decode("utf-8", "replace"), drawn)
