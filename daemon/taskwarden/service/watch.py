"""Reloading when the configuration's files change, as on SIGHUP.

In Kubernetes a ConfigMap edit reaches a mounted directory by a symlink swap a minute or
so later, and nothing signals the process; under systemd an operator may forget SIGHUP.
So the daemon fingerprints the configuration file and every team file its globs match
(their contents, not their times: a swap may keep them) and reloads when that changes. A
change that is rejected is not retried until the files change again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def config_files(config: Path, team_patterns: Sequence[str]) -> list[Path]:
    """The configuration file and the team files it names, in a stable order."""
    base = config.parent
    files = [config]
    for pattern in team_patterns:
        if Path(pattern).is_absolute():
            files.extend(sorted(Path(pattern).parent.glob(Path(pattern).name)))
        else:
            files.extend(sorted(base.glob(pattern)))
    return files


def fingerprint(files: Sequence[Path]) -> str:
    """A digest of the files' names and contents; a file that cannot be read counts as
    its error (a vanished team file is a change too)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            digest.update(f"unreadable: {exc.strerror}".encode())
        digest.update(b"\0")
    return digest.hexdigest()
