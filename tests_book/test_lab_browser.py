"""A researcher's path through the book, in a real browser: JupyterLab (``jupyter lab --no-browser`` on a free loopback
port, with a token) driven by headless Chromium (Debian's ``chromium`` and ``chromium-driver``) through selenium.

It opens ``notebooks/04_evaluate.py`` from the file browser (right click > Open With > Notebook, as the README says),
runs all cells with the notebook's defaults and checks that the output shows the baseline table of the CI-size run,
with no error and nothing on stderr.  The defaults find that run through ``OSDPM_CHAIN=ci`` (``osdpm_lib/paths.py``):
``make test`` runs this after nbval, which leaves ``runs/ci``.  A screenshot is saved as a test artefact in
``build/test-artifacts/`` (``$OSDPM_TEST_ARTIFACTS`` to put it elsewhere), pass or fail.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_evaluate.py"
RUN = ROOT / "runs" / "ci" / "clip_s0"
ARTIFACTS = Path(os.environ.get("OSDPM_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
TIMEOUT = 240          # seconds for the whole notebook on a busy 2-core machine (it takes ~15 s idle)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path) -> None:
    """JupyterLab user settings of this test only: no autosave (the .py source is never rewritten), no news."""
    for plugin, values in {"@jupyterlab/docmanager-extension/plugin": {"autosave": False},
                           "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                                           "checkForUpdates": False}}.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    missing = [p for p in ("test_metrics.json", "test_encoded.npz") if not (RUN / p).exists()]
    assert not missing, f"{RUN} lacks {missing}: run the CI-size chain first (`make nbval` leaves runs/ci)"
    tmp = tmp_path_factory.mktemp("lab")
    _settings(tmp / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, OSDPM_CHAIN="ci", JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    log = open(tmp / "jupyter.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}"]
                              + (["--allow-root"] if os.geteuid() == 0 else []),
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    f"JupyterLab did not start:\n{(tmp / 'jupyter.log').read_text()[-3000:]}"
                time.sleep(0.5)
        yield {"url": url, "token": token, "log": tmp / "jupyter.log", "tmp": tmp}
    finally:
        _stop(server.pid, signal.SIGTERM)            # the server and the kernels it started (its own session)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _stop(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _stop(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def browser(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_bin, "Debian's chromium and chromium-driver are needed (`make browser` installs them)"
    os.environ.setdefault("SE_OFFLINE", "true")      # selenium must not look for drivers on the internet
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    opts.page_load_strategy = "none"      # get() returns at once; the waits below poll (JupyterLab loads for long)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--disable-extensions", "--disable-background-networking",
                f"--user-data-dir={lab['tmp'] / 'chromium'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(driver_bin))
    yield driver
    driver.quit()


def _wait(driver, what, timeout=60):
    """``what(driver)`` once it is truthy; JupyterLab re-renders its lists, so stale elements are retried."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25,
                         ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(what)


def _until(driver, action, done, timeout=60):
    """Repeat a UI ``action`` until ``done(driver)`` holds (a click can land while JupyterLab is still busy)."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException

    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return _wait(driver, done, 5)
        except (TimeoutException, StaleElementReferenceException):
            if time.monotonic() > deadline:
                raise


def _item(driver, name):
    """The file browser's row of ``name`` (once listed)."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, ".jp-DirListing-item")
    return next((r for r in rows if r.find_element(By.CSS_SELECTOR, ".jp-DirListing-itemText").text == name), None)


def _open_folder(driver, name):
    """Open a folder of the file browser as a double click does (one dblclick event: on a slow machine two
    synthesised clicks can fall too far apart to count as one)."""
    driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('dblclick', {bubbles: true, cancelable: true}))",
                          _item(driver, name))


def _text(element) -> str:
    return (element.get_attribute("textContent") or "").strip()


def _menu_item(driver, label):
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
    return next((i for i in items if i.is_displayed()
                 and i.find_element(By.CSS_SELECTOR, ".lm-Menu-itemLabel").text.strip() == label), None)


def test_evaluate_notebook_runs_in_jupyterlab(lab, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    source_before = NOTEBOOK.read_bytes()
    # JupyterLab's own checkpoint folder (git-ignored) may appear; anything else written into notebooks/ is a fault
    listing = lambda: sorted(p.name for p in NOTEBOOK.parent.iterdir() if p.name != ".ipynb_checkpoints")  # noqa: E731
    had_checkpoints = (NOTEBOOK.parent / ".ipynb_checkpoints").exists()
    listing_before = listing()
    driver, act = browser, ActionChains(browser)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "lab_04_evaluate.png"
    t0 = time.monotonic()
    try:
        driver.get(f"{lab['url']}/lab?token={lab['token']}")
        _wait(driver, lambda d: _item(d, "notebooks"), 300)
        _until(driver, lambda: _open_folder(driver, "notebooks"), lambda d: _item(d, NOTEBOOK.name))
        _until(driver, lambda: act.context_click(_item(driver, NOTEBOOK.name)).perform(),
               lambda d: _menu_item(d, "Open With"))
        _until(driver, lambda: act.move_to_element(_menu_item(driver, "Open With")).perform(),
               lambda d: _menu_item(d, "Notebook"))
        _menu_item(driver, "Notebook").click()
        panel = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel"))
        _wait(driver, lambda d: panel.find_elements(By.CSS_SELECTOR, ".jp-CodeCell"))
        _wait(driver, lambda d: "| Idle" in d.find_element(By.ID, "jp-main-statusbar").text, 120)   # kernel up
        run_menu = _wait(driver, lambda d: next(m for m in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                                                if m.text.strip() == "Run"))
        _until(driver, run_menu.click, lambda d: _menu_item(d, "Run All Cells"))
        _menu_item(driver, "Run All Cells").click()

        def finished(d):     # textContent: JupyterLab skips rendering cells out of view (Selenium's .text is "")
            prompts = [_text(p) for p in panel.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
            return prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
        _wait(driver, finished, TIMEOUT)
        elapsed = time.monotonic() - t0

        stderr = panel.find_elements(By.CSS_SELECTOR, '[data-mime-type="application/vnd.jupyter.stderr"]')
        assert not stderr, "stderr / error output:\n" + "\n".join(map(_text, stderr))[:3000]
        tables = panel.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output table.dataframe")
        assert len(tables) == 1, f"{len(tables)} tables in the output"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", tables[0])
        rows = {_text(r.find_element(By.CSS_SELECTOR, "td")): r
                for r in tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")}
        header = [_text(h) for h in tables[0].find_elements(By.CSS_SELECTOR, "thead th")][1:]
        assert set(rows) == {"CLIP fine-tune (clip, seed 0)", "chance"}, list(rows)
        saved = json.loads((RUN / "test_metrics.json").read_text())["test"]
        shown = dict(zip(header, map(_text, rows["CLIP fine-tune (clip, seed 0)"].find_elements(By.CSS_SELECTOR,
                                                                                                "td"))))
        for key in ("rsum", "mr", "i2t_r1", "t2i_r1"):
            assert abs(float(shown[key]) - saved[key]) <= 0.0051, (key, shown[key], saved[key])
        text = _text(panel)
        assert re.search(r"test mR \d+\.\d\d vs chance \d+\.\d\d", text), text[-2000:]
        print(f"\nJupyterLab: opened and ran 04_evaluate in {elapsed:.1f} s; screenshot {shot}")
    finally:
        driver.save_screenshot(str(shot))
    assert NOTEBOOK.read_bytes() == source_before, "the jupytext source was rewritten"
    if not had_checkpoints:
        shutil.rmtree(NOTEBOOK.parent / ".ipynb_checkpoints", ignore_errors=True)
    assert listing() == listing_before, "files were written into notebooks/"
    assert "Traceback" not in lab["log"].read_text()
