"""A signal whose exception surfaces as another error still ends the command's runs KILLED, with
130/143 and one line. The case CI met: SIGTERM while TensorFlow's C extensions initialize, which
Python reports as ``ImportError: initialization failed``. Here a real process under the real
``search`` group, with a real MLflow store, imports a module that turns the signal into an
ImportError as pybind11 does (chained), or with the chain lost; a real signal is sent to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search import interrupts
from search.errors import Terminated
from search.tracking import client

# The module a command imports while the signal comes. "chained": as pybind11's module init does
# (raise_from); "lost": a library that drops the original. "slow": the conversion takes a second,
# in which a second signal comes.
EXTENSION = """
import time
failed = False
try:
    print("importing", flush=True)
    time.sleep(60)
except BaseException as err:
    if MODE == "chained":
        raise ImportError("initialization failed") from err
    failed = True
if failed:
    if MODE == "slow":
        time.sleep(1.5)
    raise ImportError("initialization failed")
"""

COMMAND = """
import sys
import click
from search.cli.base import cli, terminate_as_interrupt
from search.tracking import Tracker

@cli.command("opens-a-run")
@click.argument("uri")
def opens_a_run(uri):
    terminate_as_interrupt()
    tracker = Tracker(uri, "interrupts")
    run_id = tracker.start_search("s", {}, {})
    print(run_id, flush=True)
    with tracker.closing(run_id):
        import extension

cli(["opens-a-run", sys.argv[1]])
"""


@pytest.mark.parametrize("mode,signum,code", [("chained", signal.SIGTERM, 143), ("slow", signal.SIGINT, 130)])
def test_a_signal_turned_into_another_error_still_ends_the_run_killed(tmp_path: Path, mode: str, signum: int,
                                                                      code: int) -> None:
    (tmp_path / "extension.py").write_text(f"MODE = {mode!r}\n" + EXTENSION)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen([sys.executable, "-c", COMMAND, uri], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert proc.stdout.readline().strip() == "importing", proc.communicate()[1][-2000:]
        proc.send_signal(signum)
        if mode == "slow":
            time.sleep(0.5)
            proc.send_signal(signum)  # a second one while the first unwinds
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: interrupted; every run this command had opened was ended KILLED"
    assert ("stopping:" in err) == (mode == "slow")
    assert client(uri).get_run(run_id).info.status == "KILLED"


def test_interrupt_code_reads_the_chain_and_the_record(monkeypatch) -> None:
    monkeypatch.setattr(interrupts, "_received", [])
    assert interrupts.interrupt_code(ValueError("a bug")) is None
    assert interrupts.interrupt_code(Terminated()) == 143 and interrupts.interrupt_code(KeyboardInterrupt()) == 130
    try:
        try:
            raise Terminated()
        except BaseException:
            raise ImportError("initialization failed")  # noqa: B904 (the implicit chain is the case)
    except ImportError as err:
        assert interrupts.interrupt_code(err) == 143
    interrupts.record(signal.SIGINT)
    assert interrupts.interrupt_code(ValueError("after Ctrl-C")) == 130


def test_cause_of_finds_an_error_a_library_wrapped() -> None:
    """Ray Tune re-raises what a callback raised inside a result handler as ``TuneError(traceback)``:
    the tracking error is then only the wrapper's context, and the search must still find it."""
    from ray.tune.error import TuneError

    from search.errors import TrackingError, cause_of

    try:
        try:
            raise TrackingError("MLflow did not accept the metrics for 10 s")
        except Exception:
            import traceback

            raise TuneError(traceback.format_exc())  # noqa: B904 (as tune_controller.py does)
    except TuneError as wrapped:
        found = cause_of(wrapped, TrackingError)
        assert isinstance(found, TrackingError) and str(found).startswith("MLflow did not accept")
        assert cause_of(wrapped, KeyError) is None
