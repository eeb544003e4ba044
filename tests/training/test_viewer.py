"""The nerfstudio viewer shows a person: GUI controls in process, and a live ns-train viewer in headless Chromium."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import yaml
from nerfstudio.viewer.utils import parse_object
from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerElement

from gmnerf_ns.training.viewer import GMNeRFViewerControls
from tests.fixtures.browser import Browser, find_chromium
from tests.fixtures.required import missing
from tests.fixtures.shared_run import TEST_SUBJECT, make_tiny_data, shared_pipeline, tiny_config


class FakeViewer:
    """What ``ViewerControl._setup`` reads from nerfstudio's ``Viewer``."""

    def __init__(self, server):
        self.viser_server = server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_controls_are_found_by_the_viewer_and_switch_the_conditioning(tmp_path_factory):
    import viser

    pipeline = shared_pipeline(tmp_path_factory)
    model, dm = pipeline.model, pipeline.datamanager
    elements = dict(parse_object(pipeline, ViewerElement, "Custom Elements"))  # what nerfstudio's Viewer installs
    assert {"Custom Elements/conditioning/person", "Custom Elements/conditioning/pose"} <= set(elements)
    assert pipeline.conditioning.scene in [c for _, c in parse_object(pipeline, ViewerControl, "Custom Elements")]
    assert not any(k.startswith("conditioning") for k in pipeline.state_dict())  # checkpoints unchanged

    controls = GMNeRFViewerControls(model, dm)  # a fresh copy, installed into a real viser server
    default_key = model.default_source_key
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        for element in (controls.person, controls.pose, controls.sources, controls.proxy):
            element.install(server)
        controls.scene._setup(FakeViewer(server))
        assert controls.person.value == f"{TEST_SUBJECT} (held-out)" and model.default_source_key == default_key
        assert len(controls._handles) == dm.num_source_views  # the source-camera frustums

        model.get_outputs_for_camera(dm.eval_image(0)[0])  # caches an encoding the choice below must drop
        assert model.cached_condition is not None
        controls.person.gui_handle.value = "subject_000 (training)"  # as if chosen in the browser
        controls.pose.gui_handle.value = "1"
        deadline = time.time() + 10  # viser runs the callbacks on its executor
        while model.default_source_key != (dm.subject_names.index("subject_000"), 1) and time.time() < deadline:
            time.sleep(0.05)
        assert model.default_source_key == (dm.subject_names.index("subject_000"), 1)
        assert model.cached_condition is None
        controls.proxy.gui_handle.value = True
        deadline = time.time() + 10
        while len(controls._handles) != dm.num_source_views + 1 and time.time() < deadline:
            time.sleep(0.05)
        assert len(controls._handles) == dm.num_source_views + 1  # frustums + proxy mesh
    finally:
        model.set_condition(*default_key)
        server.stop()


def canvas_person(shot: np.ndarray) -> bool:
    """The viewer canvas (left of the GUI panel, below the title bar) shows something bright in its centre.

    The viewer draws the model's render as the canvas background; an empty scene or a black render (no source
    views) leaves the centre as dark as the canvas borders.
    """
    canvas = shot[60:, : int(shot.shape[1] * 0.72)].astype(np.float32)
    h, w = canvas.shape[:2]
    centre = canvas[h // 8 : 5 * h // 8, w // 3 : 2 * w // 3].max(axis=-1)
    border = canvas[: h // 10, : w // 6].max(axis=-1)
    return float((centre > 50).mean()) > 0.02 and float(centre.mean()) > float(border.mean()) + 5.0


@pytest.mark.slow
def test_live_training_viewer_shows_a_person_in_chromium(tmp_path):
    if find_chromium() is None:
        missing("chromium (apt-get install chromium)")
    # the tiny config (tests/fixtures/shared_run.py) with the viewer on: passed as a file, so no CLI flag spelling is
    # involved
    config = tiny_config(make_tiny_data(tmp_path / "data"), tmp_path / "outputs", steps=200)
    port = free_port()
    config.vis = "viewer"
    config.viewer.websocket_host, config.viewer.websocket_port = "127.0.0.1", port
    config.steps_per_save = config.steps_per_eval_batch = config.steps_per_eval_image = 1000
    config_path = tmp_path / "viewer_config.yml"
    config_path.write_text(yaml.dump(config))
    log = (tmp_path / "train.log").open("w")
    command = [sys.executable, "-m", "nerfstudio.scripts.train", "gm-nerf-small", "--load-config", str(config_path)]
    train = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while True:  # the viewer serves viser's prebuilt web client from the package: no internet needed
            assert train.poll() is None, "ns-train exited:\n" + (tmp_path / "train.log").read_text()[-3000:]
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "the viewer did not start:\n" + (tmp_path / "train.log").read_text()[-3000:]
            time.sleep(0.5)
        shots = []

        def person_rendered(browser: Browser) -> bool:
            # nerfstudio prints the size of the last render it streamed; 0x0 until the first one arrives
            match = re.search(r"Resolution: (\d+)x(\d+)px", browser.text())
            if not match or int(match.group(1)) == 0:
                return False
            shots.append(browser.screenshot())
            return canvas_person(shots[-1])

        with Browser(find_chromium()) as browser:
            browser.open(f"http://127.0.0.1:{port}/")
            found = browser.wait_for(person_rendered, timeout=60)
        import imageio.v2 as imageio

        if shots:
            imageio.imwrite(tmp_path / "viewer.png", shots[-1])
        assert shots, "the viewer never streamed a render:\n" + (tmp_path / "train.log").read_text()[-3000:]
        assert found, f"no person in the viewer's canvas; last screenshot: {tmp_path / 'viewer.png'}"
    finally:
        if train.poll() is None:
            os.killpg(train.pid, signal.SIGTERM)
            try:
                train.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(train.pid, signal.SIGKILL)
        log.close()


def test_screenshot_check_rejects_an_empty_canvas():
    empty = np.full((657, 1280, 3), 0, np.uint8)
    empty[:50] = 40  # title bar
    assert not canvas_person(empty)
    person = empty.copy()
    person[150:400, 400:520] = (200, 90, 40)
    assert canvas_person(person)

