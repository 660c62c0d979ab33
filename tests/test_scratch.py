"""What earlier processes leave behind. Scratch folders: a process killed with SIGKILL leaves its
folder, the next sweep removes it, and the folders of processes still running stay. A Ray left
running by ``ray start``: found only while it answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from search import scratch

MAKE_AND_WAIT = (
    "import sys, time, pathlib\n"
    "from search import scratch\n"
    "path = scratch.make('checkpoint-')\n"
    "pathlib.Path(path, 'model.keras').write_bytes(b'x' * 1000)\n"
    "print(path, flush=True)\n"
    "time.sleep(600)\n"
)


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", MAKE_AND_WAIT], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_sweep_removes_what_killed_processes_left_and_keeps_the_living(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # so gettempdir() reads TMPDIR again
    killed, killed_folder = _start(tmp_path)
    living, living_folder = _start(tmp_path)
    try:
        assert killed_folder.parent == scratch.root() / str(killed.pid)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert (killed_folder / "model.keras").exists()  # SIGKILL: nothing could clean up
        with scratch.folder("artifact-") as own:
            assert scratch.sweep() == 1
            assert not killed_folder.parent.exists()
            assert (living_folder / "model.keras").exists()
            assert Path(own).is_dir()  # this process's own scratch is never swept
        assert not Path(own).exists()
    finally:
        living.kill()
        living.wait(timeout=30)
    time.sleep(0.1)
    assert scratch.sweep() == 1 and not living_folder.exists()
    assert [p.name for p in scratch.root().iterdir()] == [str(os.getpid())]


def test_a_running_local_ray_is_found_only_when_it_answers(tmp_path: Path, monkeypatch) -> None:
    """``ray start`` leaves its address in <tmp>/ray/ray_current_cluster; a search joins it only if it answers."""
    import socket

    from search.tune.session import running_local_ray

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert running_local_ray() is None  # no file
    (tmp_path / "ray").mkdir()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        (tmp_path / "ray" / "ray_current_cluster").write_text(address + "\n")
        assert running_local_ray() == address
    assert running_local_ray() is None  # the head is gone: start a local Ray, as before
