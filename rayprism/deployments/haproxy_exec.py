"""Ray's HAProxy, run as this service's own: private, answering in the API's error shape, and gone
with the process that started it.

Ray Serve runs the program named by ``RAY_SERVE_HAPROXY_BINARY_PATH`` with HAProxy's arguments
(``-db -f CONFIG …``) each time it (re)starts HAProxy. ``rayprism serve`` points that at a shim
that runs this module, which, before it becomes HAProxy (``exec``, same process):

- removes the statistics page and the Prometheus exporter from the config Ray wrote: Ray binds
  them on every interface, on fixed ports (8404, 9101), without authentication, whatever the
  service's host and keys say, and a second service on the machine could not start beside them
  (the service's own ``/metrics`` reports what it serves);
- answers HAProxy's own errors as the API does: "no replica is up" (while every replica restarts)
  as a JSON 503 with ``Retry-After``, a replica lost mid-request as a JSON 500, where Ray's config
  sends a plain-text 500 for all three;
- asks the kernel to kill HAProxy when the process that started it dies: Ray stops HAProxy only
  when it shuts Serve down in order, so a killed service used to leave HAProxy holding its port;
- records the process (pid and start time) so that the next start can end one that still runs.

Imports the standard library and psutil only: it runs on every HAProxy reload.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import signal
import sys
from pathlib import Path

from rayprism.deployments.processes import ProcessRecord
from rayprism.platform.constants import HAPROXY_BINARY_VARIABLE, HAPROXY_HOME_VARIABLE

PIDS_FILE = "haproxy.pids"
ERROR_PAGES = {502: "500.http", 503: "503.http", 504: "500.http"}
"""HAProxy's own errors and the page that answers each (written by the service's home)."""
PUBLIC_SECTIONS = ("frontend prometheus", "listen stats")
"""The config sections (as Ray's template names them) that listen on every interface."""

ERRORFILE = re.compile(r"^(\s*errorfile\s+)(\d{3})(\s+)\S+\s*$")
PR_SET_PDEATHSIG = 1


def private_config(text: str, home: Path) -> str:
    """``text`` without the sections of :data:`PUBLIC_SECTIONS` (a section runs from its header, a
    line that starts in the first column, to the next header), its error pages those of ``home``."""
    kept: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        if line.strip() and not line[0].isspace():
            dropping = line.strip() in PUBLIC_SECTIONS
        if dropping:
            continue
        match = ERRORFILE.match(line)
        if match and int(match.group(2)) in ERROR_PAGES:
            line = f"{match.group(1)}{match.group(2)}{match.group(3)}{home / ERROR_PAGES[int(match.group(2))]}\n"
        kept.append(line)
    return "".join(kept)


def make_private(config_path: Path, home: Path) -> None:
    """Rewrite Ray's config in place, under the lock Ray takes while it writes the file."""
    with open(f"{config_path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        text = config_path.read_text()
        private = private_config(text, home)
        if private != text:
            scratch = config_path.with_name(f".{config_path.name}.{os.getpid()}")
            scratch.write_text(private)
            os.replace(scratch, config_path)


def die_with_parent() -> None:
    """SIGKILL this process (HAProxy, after ``exec``) when the process that started it ends."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)


def config_argument(arguments: list[str]) -> Path:
    try:
        return Path(arguments[arguments.index("-f") + 1])
    except (ValueError, IndexError):
        sys.exit(f"rayprism's HAProxy launcher: no -f CONFIG among {arguments}")


def main(arguments: list[str]) -> None:
    binary = os.environ[HAPROXY_BINARY_VARIABLE]
    home = Path(os.environ[HAPROXY_HOME_VARIABLE])
    make_private(config_argument(arguments), home)
    die_with_parent()
    ProcessRecord(home / PIDS_FILE).add(os.getpid())
    os.execv(binary, [binary, *arguments])


if __name__ == "__main__":
    main(sys.argv[1:])
