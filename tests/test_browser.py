"""Real-browser test: lesson 01's explorer works in JupyterLab, driven by headless Chromium.

The test starts JupyterLab from the running interpreter (the course's .venv under `make test`)
on a free loopback port with a random token, opens the lesson, clears and runs all cells,
waits for the first explorer, moves one of its sliders with the keyboard, and checks that
the explorer's figure changes and that no cell shows an error. The server is always stopped.

What "an explorer" means here (the DOM the test waits for):
  a widget-view output (``.jp-OutputArea-output`` with
  ``data-mime-type="application/vnd.jupyter.widget-view+json"``) that contains an ipywidgets
  slider (``.widget-slider`` with a noUiSlider handle ``.noUi-handle``) and an ``<img>``
  (the figure: matplotlib inline output inside an ``ipywidgets.Output``, or an Image widget).
The figure counts as changed when that ``<img>``'s ``src`` differs from the one before the move.

Needs Debian's Chromium at /usr/bin/chromium (Playwright's own browser download is never used).
Without it, or without the lesson notebook, the test skips locally and fails when CI=true.
Screenshots land in the test's tmp_path: ``final.png`` always, ``failure.png`` on failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
LESSON = "01_sigmoid_saturation.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").strip().lower() == "true"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SERVER_START_TIMEOUT = 90  # s, JupyterLab answering /api/status
RUN_ALL_TIMEOUT = 300  # s, every cell of the notebook executed
FIGURE_CHANGE_TIMEOUT = 60  # s, the explorer's figure redrawn after a slider move
EXPLORER = "[data-gc-explorer]"  # set by FIND_EXPLORER on the explorer's output element

# An error output renders with the stderr renderer, exactly like a stderr stream (JupyterLab
# gives it no class or mime attribute of its own), so the test finds errors two ways: every
# "error" message the kernel publishes (read off the page's kernel websocket), and, in the DOM,
# any stderr output that holds a Python traceback.
STDERR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
KERNEL_STATUS = 'span.jp-StatusBar-TextItem[title^="Change kernel"]'


def skip_or_fail(reason: str) -> None:
    """Skip with a reason on a developer's machine; fail under CI=true."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    log: Path


def _write_settings(settings_dir: Path) -> None:
    """User settings for a quiet, deterministic JupyterLab."""
    plugins = {
        # No "would you like to get Jupyter news?" toast, no update check.
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        # Keep every cell in the DOM so that the test can see all prompts and outputs.
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for rel, value in plugins.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value), encoding="utf-8")


@contextmanager
def jupyter_lab(root_dir: Path, tmp_path: Path):
    """Run JupyterLab on a free loopback port with a fresh settings/workspace dir; stop it after."""
    port = free_port()
    token = secrets.token_hex(24)
    settings_dir = tmp_path / "lab-user-settings"
    workspaces_dir = tmp_path / "lab-workspaces"
    config_dir = tmp_path / "jupyter-config"
    runtime_dir = tmp_path / "jupyter-runtime"
    for d in (settings_dir, workspaces_dir, config_dir, runtime_dir):
        d.mkdir(parents=True, exist_ok=True)
    _write_settings(settings_dir)
    log = tmp_path / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        f"--LabApp.user_settings_dir={settings_dir}",
        f"--LabApp.workspaces_dir={workspaces_dir}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--allow-root",
    ]
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(config_dir),  # ignore the user's own jupyter config
        JUPYTER_RUNTIME_DIR=str(runtime_dir),
        JUPYTER_PREFER_ENV_PATH="1",  # the python3 kernel is this interpreter
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: kernels included
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                req = urllib.request.Request(
                    f"{url}/api/status", headers={"Authorization": f"token {token}"}
                )
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_TIMEOUT} s")
            time.sleep(0.3)
        yield Lab(url=url, token=token, log=log)
    finally:
        _stop(proc, url, token)


def _stop(proc: subprocess.Popen, url: str, token: str) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure its group is gone."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(
                f"{url}/api/shutdown",
                method="POST",
                headers={"Authorization": f"token {token}"},
            )
            urllib.request.urlopen(req, timeout=5).close()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    try:  # kernels left in the server's process group, if any
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _nonempty_code_cells(notebook: Path) -> int:
    nb = json.loads(notebook.read_text(encoding="utf-8"))

    def src(cell):
        s = cell.get("source", "")
        return "".join(s) if isinstance(s, list) else s

    return sum(1 for c in nb["cells"] if c["cell_type"] == "code" and src(c).strip())


def _menu(page, menu: str, item: str) -> None:
    """Click a main-menu entry, e.g. Run -> Run All Cells."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel").get_by_text(menu, exact=True).click()
    page.locator(".lm-Menu-content .lm-Menu-itemLabel").get_by_text(item, exact=True).click()


def kernel_errors_in_frame(payload: bytes | str) -> list[str]:
    """The ``ename: evalue`` of an iopub "error" message in one kernel-websocket frame.

    JupyterLab speaks either the binary ``v1.kernel.websocket.jupyter.org`` protocol (a count
    and offsets as little-endian uint64, then channel, header, parent header, metadata,
    content, buffers) or plain JSON messages; both are read.
    """
    try:
        if isinstance(payload, str):
            msg = json.loads(payload)
            channel, header, content = msg.get("channel"), msg["header"], msg["content"]
        else:
            n = int.from_bytes(payload[:8], "little")
            offsets = [
                int.from_bytes(payload[8 * i : 8 * i + 8], "little") for i in range(1, n + 1)
            ]
            parts = [payload[offsets[i] : offsets[i + 1]] for i in range(n - 1)]
            channel = parts[0].decode()
            header, content = json.loads(parts[1]), json.loads(parts[4])
    except (ValueError, KeyError, IndexError, TypeError):
        return []
    if channel == "iopub" and header.get("msg_type") == "error":
        return [f"{content.get('ename')}: {content.get('evalue')}"]
    return []


TRACEBACKS_IN_DOM = """(sel) => Array.from(document.querySelectorAll(sel))
    .map(el => el.innerText)
    .filter(t => /Traceback \\(most recent call last\\)/.test(t))
    .map(t => t.slice(-800))"""

FIND_EXPLORER = """() => {
    // Top-level outputs of notebook cells (not outputs nested inside a widget).
    const outs = Array.from(
        document.querySelectorAll('.jp-Notebook .jp-Cell .jp-OutputArea-output')
    ).filter(o => !o.parentElement.closest('.jupyter-widgets'));
    for (const o of outs) {
        const slider = o.querySelector('.jupyter-widgets .widget-slider .noUi-handle');
        if (slider && o.querySelector('img')) {
            o.setAttribute('data-gc-explorer', '1');
            return true;
        }
    }
    return false;
}"""

EXPLORER_IMG_SRC = """() => {
    const i = document.querySelector('[data-gc-explorer] img');
    return i ? i.getAttribute('src') : null;
}"""

CELL_STATE = """() => {
    const txt = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
        .map(e => e.textContent.trim());
    const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
    return {numbered: txt.filter(t => /\\[\\d+\\]/.test(t)).length,
            queued: txt.filter(t => t.includes('*')).length,
            indicator: ind ? ind.getAttribute('data-status') : null};
}"""


@dataclass
class ExplorerResult:
    src_before: str
    src_after: str
    readout_before: str
    readout_after: str
    errors: list[str]
    screenshot: Path


def _wait_kernel_idle(page, timeout_s: float) -> None:
    # The execution indicator says "idle" for a moment before any kernel is connected, so
    # wait for the status bar's kernel item to read "<kernel name> | Idle".
    page.wait_for_function(
        """(sel) => { const e = document.querySelector(sel); const t = e ? e.textContent : '';
            return /\\|\\s*Idle\\s*$/.test(t) && !/No Kernel/.test(t); }""",
        arg=KERNEL_STATUS,
        timeout=timeout_s * 1000,
    )


def drive_notebook(root_dir: Path, notebook_name: str, tmp_path: Path) -> ExplorerResult:
    """Open ``root_dir/notebook_name`` in JupyterLab in headless Chromium, clear and run all
    cells, move the first explorer's first slider by one step, and report what happened.

    The notebook file is not modified (the test never saves it).
    """
    from playwright.sync_api import sync_playwright

    n_cells = _nonempty_code_cells(root_dir / notebook_name)
    kernel_errors: list[str] = []

    def watch(ws) -> None:
        if "/api/kernels/" in ws.url:
            ws.on(
                "framereceived",
                lambda payload: kernel_errors.extend(kernel_errors_in_frame(payload)),
            )

    with jupyter_lab(root_dir, tmp_path) as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("websocket", watch)
        final = tmp_path / "final.png"
        try:
            page.goto(
                f"{lab.url}/lab/tree/{notebook_name}?reset&token={lab.token}",
                wait_until="domcontentloaded",
                timeout=60_000,
            )
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
            # A notebook without kernel metadata asks which kernel to use: take the default.
            page.wait_for_timeout(1000)
            dialog_accept = page.locator(".jp-Dialog .jp-mod-accept")
            if dialog_accept.count():
                dialog_accept.first.click()
            _wait_kernel_idle(page, 90)

            # Fresh outputs only: clear what the committed notebook holds, then run all.
            _menu(page, "Edit", "Clear Outputs of All Cells")
            _menu(page, "Run", "Run All Cells")
            started = time.monotonic()
            deadline = started + RUN_ALL_TIMEOUT
            retried = False
            while True:
                state = page.evaluate(CELL_STATE)
                errors = kernel_errors + page.evaluate(TRACEBACKS_IN_DOM, STDERR_OUTPUT)
                if errors:
                    raise AssertionError(f"a cell failed while running all cells:\n{errors[0]}")
                if (
                    state["numbered"] >= n_cells
                    and not state["queued"]
                    and state["indicator"] == "idle"
                ):
                    break
                if (
                    not retried
                    and not state["numbered"]
                    and not state["queued"]
                    and time.monotonic() - started > 15
                ):
                    _menu(page, "Run", "Run All Cells")  # the first click went nowhere
                    retried = True
                if time.monotonic() > deadline:
                    raise AssertionError(f"cells did not finish in {RUN_ALL_TIMEOUT} s: {state}")
                page.wait_for_timeout(500)
            _wait_kernel_idle(page, 60)

            assert page.evaluate(FIND_EXPLORER), (
                "no explorer found: expected a cell output holding an ipywidgets slider "
                "(.widget-slider with a .noUi-handle) and an <img> figure"
            )
            explorer = page.locator(EXPLORER)
            explorer.scroll_into_view_if_needed()
            src_before = page.evaluate(EXPLORER_IMG_SRC)
            slider = explorer.locator(".widget-slider").first
            readout = slider.locator(".widget-readout")

            def read() -> str:
                return readout.first.inner_text().strip() if readout.count() else ""

            readout_before = read()
            # Real key presses on the slider's handle: noUiSlider fires its "change" event on
            # each, which is what a continuous_update=False slider sends to the kernel.
            handle = slider.locator(".noUi-handle").first
            handle.focus()
            handle.press("ArrowRight")
            page.wait_for_timeout(300)
            readout_after = read()
            if readout_after == readout_before:  # already at its maximum: go the other way
                handle.press("ArrowLeft")
                page.wait_for_timeout(300)
                readout_after = read()

            deadline = time.monotonic() + FIGURE_CHANGE_TIMEOUT
            while time.monotonic() < deadline and not kernel_errors:
                src_now = page.evaluate(EXPLORER_IMG_SRC)
                if src_now and src_now != src_before:
                    break
                page.wait_for_timeout(250)
            if not kernel_errors:
                _wait_kernel_idle(page, 60)
            page.wait_for_timeout(500)  # let a late error from the callback render
            src_after = page.evaluate(EXPLORER_IMG_SRC)
            errors = kernel_errors + page.evaluate(TRACEBACKS_IN_DOM, STDERR_OUTPUT)
            page.screenshot(path=str(final))
            return ExplorerResult(
                src_before or "", src_after or "", readout_before, readout_after, errors, final
            )
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()


def _check_browser_available() -> None:
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[dev]')")


def _assert_explorer_worked(result: ExplorerResult, tmp_path: Path) -> None:
    where = f"screenshots in {tmp_path}"
    assert not result.errors, f"error output in the notebook ({where}):\n{result.errors[0]}"
    assert result.src_before.startswith(("data:image", "blob:")), (
        f"explorer figure has no image source ({where})"
    )
    assert result.readout_after != result.readout_before, (
        f"the slider did not move: readout stayed {result.readout_before!r} ({where})"
    )
    assert result.src_after, f"the explorer's figure disappeared after the move ({where})"
    assert result.src_after != result.src_before, (
        f"the figure did not change within {FIGURE_CHANGE_TIMEOUT} s of moving the slider "
        f"from {result.readout_before} to {result.readout_after} ({where})"
    )


def test_lesson01_explorer_in_real_browser(tmp_path):
    _check_browser_available()
    if not (NOTEBOOK_DIR / LESSON).exists():
        skip_or_fail(f"notebooks/{LESSON} does not exist yet")
    result = drive_notebook(NOTEBOOK_DIR, LESSON, tmp_path)
    _assert_explorer_worked(result, tmp_path)


HARNESS_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": [
                "import ipywidgets as widgets\n",
                "import matplotlib.pyplot as plt\n",
                "from IPython.display import display\n",
                "\n",
                "def draw(n):\n",
                "    fig, ax = plt.subplots(figsize=(4, 3))\n",
                "    ax.plot(range(n + 2), [i * i for i in range(n + 2)])\n",
                "    ax.set_title(f'n = {n}')\n",
                "    plt.show()\n",
                "\n",
                "slider = widgets.IntSlider(value=3, min=1, max=20, continuous_update=False)\n",
                "display(widgets.VBox([slider, widgets.interactive_output(draw, {'n': slider})]))",
            ],
        }
    ],
    "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_browser_harness_on_a_minimal_explorer(tmp_path):
    """The harness itself, on a one-cell explorer: tells a broken harness from a broken lesson."""
    _check_browser_available()
    root = tmp_path / "root"
    root.mkdir()
    (root / "harness.ipynb").write_text(json.dumps(HARNESS_NOTEBOOK), encoding="utf-8")
    result = drive_notebook(root, "harness.ipynb", tmp_path)
    _assert_explorer_worked(result, tmp_path)
    assert re.fullmatch(r"\d+", result.readout_after)
