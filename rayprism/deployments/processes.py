"""Processes a service started, remembered in a file so that a later start can end the ones that
outlived it (a ``kill -9`` of ``rayprism serve`` gives nothing a chance to clean up).

A process is known by its pid and its start time together: a pid reused by an unrelated program
later has another start time, and is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import psutil

END_WAIT_S = 5.0


class ProcessRecord:
    """A file of ``pid start-time`` lines, one per process, appended to as processes start."""

    def __init__(self, path: Path):
        self.path = path
        self.known: set[tuple[int, float]] = set()
        """What this process has written, so that a process is recorded once."""

    def add(self, pid: int) -> None:
        self.add_all([psutil.Process(pid)])

    def add_all(self, processes: Iterable[psutil.Process]) -> None:
        """Record each process not recorded yet; one append of a few short lines keeps the file whole
        while several processes write to it."""
        new = []
        for process in processes:
            try:
                identity = (process.pid, process.create_time())
            except psutil.NoSuchProcess:
                continue
            if identity not in self.known:
                self.known.add(identity)
                new.append(f"{identity[0]} {identity[1]!r}\n")
        if not new:
            return
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(descriptor, "".join(new).encode())
        finally:
            os.close(descriptor)

    def alive(self) -> list[psutil.Process]:
        """The recorded processes that still run (the same processes, not reused pids)."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        running = []
        for line in lines:
            pid, started = line.split()
            try:
                process = psutil.Process(int(pid))
                if process.create_time() == float(started) and process.status() != psutil.STATUS_ZOMBIE:
                    running.append(process)
            except psutil.NoSuchProcess:
                continue
        return running

    def end_survivors(self) -> list[int]:
        """Kill every recorded process that still runs, wait for them to go, forget them all; returns
        the pids ended."""
        survivors = self.alive()
        for process in survivors:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(survivors, timeout=END_WAIT_S)
        self.path.unlink(missing_ok=True)
        return [process.pid for process in survivors]
