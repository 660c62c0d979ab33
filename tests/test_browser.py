"""End to end, as a user sees it: a small search, `search retrain` and `search evaluate` write a
store; `search ui` serves it; headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) checks that the MLflow UI shows the search, its nested trial runs, a trial's
metric charts, the search's description and the evaluate run's reliability diagram, and saves
the screenshots the README shows (``docs/img/ui-*.png``).

The same store checks the command line's side of it: no progress lines when stderr is not a
terminal, none with ``-q`` on a terminal, and ``search runs`` / ``search best`` read it back.

Chromium is required: ``apt-get install -y chromium chromium-driver`` (``.ci/run`` does this).
If it is missing or does not start, the browser tests fail and say so; they are never skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import pick_free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# docs/screenshots.sh points these at the README's own default run and at docs/img; by default the tests
# make a small store of their own and keep their screenshots in a temporary folder.
SCREENSHOTS = Path(os.environ.get("SEARCH_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="search-screenshots-"))
GIVEN_STORE = os.environ.get("SEARCH_BROWSER_STORE")
CHROMIUM = os.environ.get("SEARCH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SEARCH_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
WIDTH, HEIGHT = 1440, 900
_SCRIPT = Path(sys.executable).with_name("search")
SEARCH = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-c", "from search.cli import main; main()"]
_SCRUB = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "SEARCH_DATA_DIR", "SEARCH_STORAGE_PATH", "MLFLOW_LOGGING_LEVEL")
# What a progress display draws: a carriage return that is not part of a line end, or "erase line".
PROGRESS = re.compile(r"\r(?!\n)|\x1b\[K")


def search_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_search(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SEARCH, *args], cwd=cwd, env=search_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"search {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


@dataclass
class Store:
    folder: Path
    uri: str
    experiment_id: str
    parent_run_id: str
    trial_run_ids: list[str]
    best_trial_run_id: str
    retrain_run_id: str
    evaluate_run_id: str
    stderr: dict[str, str]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A search of 3 trials, one retrain seed and an MC evaluation, run as a user would, in a temp folder:
    one ``search pipeline`` (one interpreter's imports instead of three).

    It runs without ``-q``: its stderr is a pipe, so it must draw no progress by itself.
    """
    if GIVEN_STORE:
        return _given_store(Path(GIVEN_STORE).resolve())
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder}/mlflow.db"
    piped = run_search("pipeline", "--space", "quick", "--num-samples", "3", "--max-epochs", "2", "--searcher", "random",
                       "--scheduler", "fifo", "--seeds", "1", "--mc-samples", "10", "--tracking-uri", uri, "--json",
                       cwd=folder)
    report = json.loads(piped.stdout)
    search, retrain, evaluate = report["search"], report["retrain"], report["evaluate"]
    from search import tracking

    parent = tracking.client(uri).get_run(search["parent_run_id"])
    return Store(
        folder=folder, uri=uri, experiment_id=parent.info.experiment_id, parent_run_id=search["parent_run_id"],
        trial_run_ids=[t["run_id"] for t in search["trials"]], best_trial_run_id=search["best"]["run_id"],
        retrain_run_id=retrain["best_seed_run_id"], evaluate_run_id=evaluate["run_id"],
        stderr={"pipeline": piped.stderr},
    )


def _given_store(folder: Path) -> Store:
    """The newest search of an existing store (``$SEARCH_BROWSER_STORE``/mlflow.db), retrained and evaluated."""
    from search import tracking
    from search.tracking import tags

    uri = f"sqlite:///{folder}/mlflow.db"
    record = tracking.SearchRecord.find(uri, "search")
    trials = sorted(record.children(tags.ROLE_TRIAL), key=lambda r: r.info.run_name)
    return Store(folder=folder, uri=uri, experiment_id=record.experiment_id, parent_run_id=record.run_id,
                 trial_run_ids=[t.info.run_id for t in trials], best_trial_run_id=record.tags[tags.BEST_RUN_ID],
                 retrain_run_id=record.tags[tags.BEST_RETRAIN_RUN_ID], evaluate_run_id=record.tags[tags.EVALUATE_RUN_ID],
                 stderr={})


# =========================================================================== the command line


RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+(WARNING|INFO)\b", re.M)


def test_no_progress_lines_when_stderr_is_not_a_terminal(store: Store) -> None:
    """Nor Ray's own log lines (its token-auth notice, TensorBoard's complaint about a coalesced report):
    without -v they are not the user's."""
    for command, err in store.stderr.items():
        assert not PROGRESS.search(err), f"search {command} drew progress on a pipe:\n{err[-2000:]!r}"
        assert not RAY_LOG_LINE.search(err), f"search {command} let Ray's log through:\n{err[-2000:]}"


def run_on_terminal(args: list[str], *, cwd: Path, timeout: float = 600) -> tuple[int, str, str]:
    """Run ``args`` with stderr on a pseudo-terminal (stdout piped); returns (status, stdout, terminal output)."""
    import pty
    import termios

    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR  # keep "\n" as it was written: a "\r" seen is one the program wrote
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen(args, cwd=cwd, env=search_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(10)
    os.close(master)
    return proc.returncode, out.decode(errors="replace"), b"".join(chunks).decode(errors="replace")


def test_quiet_draws_no_progress_on_a_terminal(store: Store, tmp_path: Path) -> None:
    # The harness itself: the child does see a terminal.
    _, _, seen = run_on_terminal([sys.executable, "-c", "import sys; sys.stderr.write(str(sys.stderr.isatty()))"],
                                 cwd=tmp_path)
    assert seen == "True"
    # A copy of the store, so that this retrain does not change what the browser tests see.
    shutil.copy(store.folder / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code, out, terminal = run_on_terminal([*SEARCH, "retrain", "--seeds", "1", "--epochs", "1", "-q",
                                           "--tracking-uri", uri], cwd=tmp_path)
    assert code == 0, terminal[-3000:]
    assert "test accuracy" in out
    assert not PROGRESS.search(terminal), f"-q drew progress on a terminal:\n{terminal[-2000:]!r}"


def test_runs_and_best_read_the_store(store: Store) -> None:
    from click.testing import CliRunner

    from search.cli import cli

    def read(command: str) -> Any:  # in this process: only reads, and spares two interpreters' imports
        result = CliRunner().invoke(cli, [command, "--tracking-uri", store.uri, "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr[-2000:]
        return json.loads(result.stdout)

    runs = read("runs")
    assert [r["run_id"] for r in runs] == [store.parent_run_id]
    assert runs[0]["trials"] == 3 and runs[0]["status"] == "FINISHED"
    best = read("best")
    assert best["run_id"] == store.best_trial_run_id and best["parent_run_id"] == store.parent_run_id
    assert "activation" in best["config"]


def test_the_search_run_holds_its_plots_and_a_description_with_links(store: Store) -> None:
    from search import plots, tracking

    mlc = tracking.client(store.uri)
    names = sorted(a.path for a in mlc.list_artifacts(store.parent_run_id, "plots"))
    assert names == ["plots/best_so_far.png", "plots/by_group.png", "plots/parallel_coordinates.png"]
    local = Path(mlc.download_artifacts(store.parent_run_id, "plots", str(store.folder / "downloaded")))
    groups = plots.plot_data(local / "by_group.png")
    assert sum(groups["panels"][0]["counts"]) + sum(groups["panels"][0]["failed"]) == 3
    note = mlc.get_run(store.parent_run_id).data.tags[tracking.NOTE]
    for heading in ("### Best trial", "### Retrain", "### Evaluate"):
        assert heading in note, note
    exp = store.experiment_id
    assert f"(#/experiments/{exp}/runs/{store.best_trial_run_id})" in note
    assert f"(#/experiments/{exp}/runs/{store.retrain_run_id})" in note
    assert f"(#/experiments/{exp}/runs/{store.evaluate_run_id})" in note
    assert f"(#/experiments/{exp}/runs/{store.evaluate_run_id}/artifacts/reliability.png)" in note
    assert " ± " in note and "| deterministic |" in note
    assert "| searcher | `random` |" in note and "| scheduler | `fifo` |" in note and "3 trials" in note


# =========================================================================== the UI


@pytest.fixture(scope="module")
def ui(store: Store) -> Iterator[str]:
    """`search ui` on the store, on a free loopback port; its process group is killed at the end."""
    port = pick_free_port()
    log = (store.folder / "ui.log").open("w")
    # On all interfaces, as a user sharing the UI runs it (test_ui_on_all_interfaces_...); requests stay on loopback.
    proc = subprocess.Popen([*SEARCH, "ui", "--tracking-uri", store.uri, "--host", "0.0.0.0", "--port", str(port)],
                            cwd=store.folder,
                            env=search_env(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1"), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"search ui exited with {proc.returncode}:\n{(store.folder / 'ui.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"search ui did not answer on {url} in 240 s:\n{(store.folder / 'ui.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_ui_on_all_interfaces_warns_and_lets_remote_hosts_in(store: Store, ui: str) -> None:
    """--host 0.0.0.0: a warning that the store is exposed, and MLflow's host check opened (a request
    with a remote Host header is answered, not refused with 403). Requests go to loopback only."""
    request = urllib.request.Request(ui + "health", headers={"Host": "mlflow.example.org"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert "warning: --host 0.0.0.0 serves the store" in (store.folder / "ui.log").read_text()


@pytest.fixture(scope="module")
def browser(ui: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium through chromedriver, on the MLflow UI, in its "Model training" view."""
    if not Path(CHROMIUM).is_file() or not Path(CHROMEDRIVER).is_file():
        # CI installs Chromium and requires these tests; elsewhere they are skipped with the install command.
        missing = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
        missing(f"Chromium is needed for the browser tests, but {CHROMIUM} or {CHROMEDRIVER} is missing: "
                    "apt-get install -y chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is needed for the browser tests: pip install -e '.[test]'")
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile.parent / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except Exception as err:  # noqa: BLE001 (selenium raises several types for a browser that does not start)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        pytest.fail(f"Chromium ({CHROMIUM}) did not start: {first}")
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        driver.get(ui)
        wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete", 60, "the page load")
        # The classic-ML view (not GenAI), without the assistant side panel: MLflow keeps both in localStorage.
        driver.execute_script(
            "localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));"
            "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
        )
        driver.refresh()
        driver.ui_url = ui
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float, what: str) -> Any:
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def safe(d: Any) -> Any:
        try:
            return condition(d)
        except WebDriverException:  # e.g. an element re-rendered by React between find and read
            return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.3).until(safe)
    except TimeoutException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"ui-failed-{int(time.time())}.png"
        driver.save_screenshot(str(shot))
        text = driver.find_element("tag name", "body").text[:1500]
        pytest.fail(f"the MLflow UI did not show {what} within {timeout:.0f} s (at {driver.current_url}; "
                    f"screenshot {shot}); the page said:\n{text}")


def visit(driver: Any, fragment: str, *, reload: bool = False) -> None:
    """Go to ``fragment`` of the UI; ``reload`` loads the page afresh (the artifact view keeps a stale,
    empty listing when it comes from another run's page within the app)."""
    driver.get(driver.ui_url + fragment)
    if reload:
        driver.refresh()


def links_to(driver: Any, run_id: str, artifact: str = "") -> list[Any]:
    return [a for a in driver.find_elements("css selector", f"a[href*='/runs/{run_id}{artifact}']") if a.is_displayed()]


def screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    time.sleep(1.0)  # let charts finish their transitions
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000, f"{path} is (nearly) empty"
    return path


def image_width(driver: Any, artifact: str) -> int:
    """The natural width of the loaded <img> that shows ``artifact`` (0 while none has loaded).

    The artifact viewer fetches the file and shows it from a blob: URL, with the path as alt text.
    """
    return int(driver.execute_script(
        "return Math.max(0, ...Array.from(document.images)"
        ".filter(i => i.alt === arguments[0] && i.complete).map(i => i.naturalWidth))", artifact))


def png_width(store: Store, run_id: str, artifact: str) -> int:
    from PIL import Image

    from search import tracking

    local = tracking.client(store.uri).download_artifacts(run_id, artifact, str(store.folder / "downloaded" / run_id))
    with Image.open(local) as image:
        return image.size[0]


@pytest.mark.browser
def test_ui_lists_the_search_with_its_trials_nested(store: Store, browser: Any) -> None:
    visit(browser, f"#/experiments/{store.experiment_id}")  # the URL `search ui` prints; it opens the runs table
    wait_for(browser, lambda d: links_to(d, store.parent_run_id), 90, "the search's parent run")
    assert "/runs" in browser.current_url
    children = [*store.trial_run_ids, store.retrain_run_id, store.evaluate_run_id]
    if not links_to(browser, store.trial_run_ids[0]):  # collapsed: expand the parent row
        cell = links_to(browser, store.parent_run_id)[0].find_element(
            "xpath", "./ancestor::div[contains(concat(' ', @class, ' '), ' ag-cell ')][1]")
        cell.find_element("css selector", "button").click()
    wait_for(browser, lambda d: all(links_to(d, run_id) for run_id in children), 30, "the nested trial runs")
    body = browser.find_element("tag name", "body").text
    for name in ("trial-001", "trial-002", "trial-003", "retrain best seed 0", "evaluate (MC dropout)"):
        assert name in body, name
    # Nested: each child row is indented under the parent (its name starts further right).
    parent_x = links_to(browser, store.parent_run_id)[0].location["x"]
    assert all(links_to(browser, run_id)[0].location["x"] > parent_x for run_id in children)
    _widen_run_names(browser)
    screenshot(browser, "ui-runs.png")


def _widen_run_names(driver: Any) -> None:
    """Drag the Run Name column wider, so the screenshot shows whole trial names (cosmetic)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.action_chains import ActionChains

    try:
        header = driver.find_element("css selector", "div.ag-header-cell[col-id*='Run Name']")
        handle = header.find_element("css selector", ".ag-header-cell-resize")
        ActionChains(driver).drag_and_drop_by_offset(handle, 190, 0).perform()
    except WebDriverException:
        pass


@pytest.mark.browser
def test_ui_shows_the_search_description(store: Store, browser: Any) -> None:
    visit(browser, f"#/experiments/{store.experiment_id}/runs/{store.parent_run_id}")
    wait_for(browser, lambda d: "settings" in d.find_element("tag name", "body").text.lower() or
             d.find_elements("xpath", "//*[normalize-space(text())='Description']"), 60, "the search run's page")
    wait_for(browser, lambda d: d.find_elements("xpath", "//*[normalize-space(text())='Description']"), 60,
             "the Description section")
    for more in browser.find_elements("xpath", "//*[normalize-space(text())='Show more']"):  # a long note is folded
        more.click()
    wait_for(browser, lambda d: "Best trial" in d.find_element("tag name", "body").text, 30, "the search's description")
    # The markdown is rendered: its tables are tables, its links point at the runs.
    wait_for(browser, lambda d: links_to(d, store.evaluate_run_id) and links_to(d, store.retrain_run_id), 30,
             "links to the retrain and evaluate runs in the description")
    tables = browser.find_elements("css selector", "table")
    assert any("searcher" in t.text for t in tables), "the settings table is not rendered as a table"
    body = browser.find_element("tag name", "body").text
    assert "Retrain" in body and "Evaluate" in body and "±" in body
    heading = browser.find_element("xpath", "//*[normalize-space(text())='Description']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", heading)
    screenshot(browser, "ui-search.png")


@pytest.mark.browser
def test_ui_shows_a_trial_metric_charts(store: Store, browser: Any) -> None:
    tall = HEIGHT + 900  # room for every chart (ten with best_epoch_val_loss): the grid only draws the charts in view
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": WIDTH, "height": tall, "deviceScaleFactor": 1, "mobile": False})
    try:
        visit(browser, f"#/experiments/{store.experiment_id}/runs/{store.best_trial_run_id}/model-metrics")
        wait_for(browser, lambda d: "val_accuracy" in d.find_element("tag name", "body").text, 60, "the trial's metrics")
        wait_for(browser, lambda d: len(d.find_elements("css selector", ".js-plotly-plot")) >= 9, 60,
                 "the nine metric charts")
        body = browser.find_element("tag name", "body").text.split()
        for metric in ("accuracy", "loss", "val_accuracy", "val_loss", "lr", "epoch_time_s"):
            assert metric in body, metric
        screenshot(browser, "ui-trial-metrics.png")
    finally:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})


@pytest.mark.browser
def test_ui_shows_the_reliability_diagram(store: Store, browser: Any) -> None:
    visit(browser, f"#/experiments/{store.experiment_id}/runs/{store.evaluate_run_id}/artifacts/reliability.png", reload=True)
    width = png_width(store, store.evaluate_run_id, "reliability.png")
    wait_for(browser, lambda d: image_width(d, "reliability.png") == width, 60, "the reliability diagram (reliability.png)")
    screenshot(browser, "ui-reliability.png")


@pytest.mark.browser
def test_ui_shows_the_search_plots(store: Store, browser: Any) -> None:
    visit(browser, f"#/experiments/{store.experiment_id}/runs/{store.parent_run_id}/artifacts/plots/by_group.png",
          reload=True)
    width = png_width(store, store.parent_run_id, "plots/by_group.png")
    wait_for(browser, lambda d: image_width(d, "plots/by_group.png") == width, 60,
             "the search's group plot (plots/by_group.png)")
    screenshot(browser, "ui-search-plots.png")
