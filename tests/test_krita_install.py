"""`glcic-daemon install-plugin krita --dest X`: every file written outside X is named.

Krita reads its action files from the actions folder beside pykrita and its plugin switches from
kritarc, so --dest cannot hold everything; the command must then say where it wrote the rest.
Checked against the file system itself: whatever changed outside X must appear in the output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    return {
        path: (path.stat().st_mtime_ns, path.stat().st_size)
        for path in root.rglob("*")
        if path.is_file()
    }


def _install(home: Path, dest: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"))  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "glcic.daemon.cli", "install-plugin", "krita", "--dest", str(dest)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG paths of Linux")
def test_dest_names_every_path_written_outside_it(tmp_path) -> None:
    dest = tmp_path / "elsewhere" / "pykrita"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text("[General]\nkeep=me\n")
    before = _snapshot(tmp_path)
    result = _install(tmp_path, dest)
    assert result.returncode in (0, 1), result.stderr  # 1: this Python lacks pyzmq (a problem)
    after = _snapshot(tmp_path)
    changed = {path for path, stamp in after.items() if before.get(path) != stamp}
    outside = sorted(path for path in changed if not path.is_relative_to(dest))
    # Both things Krita reads from outside the pykrita folder were written ...
    assert tmp_path / "config" / "kritarc" in outside
    assert tmp_path / "elsewhere" / "actions" / "glcic_complete.action" in outside
    # ... and every file changed outside --dest is named in what the command printed.
    printed = result.stdout + result.stderr
    for path in outside:
        assert str(path) in printed, (path, printed)
    assert f"outside {dest}" in printed
    assert "[General]\nkeep=me\n" in (tmp_path / "config" / "kritarc").read_text()
