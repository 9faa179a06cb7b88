"""The web UI's ControlNet section in real Chromium (Playwright + Debian's chromium), against a server on
loopback: hidden under an SD2-depth checkpoint, shown under an SD 1.5 base, and a generation through it
equals the library's generate() on the same request (depth2img.pipeline directly, no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.test_server_util import ServerThread, photo_png, settings
from tests.test_ui import CHROMIUM, browser, fetch, set_number, shot  # noqa: F401  (the module's browser fixture)

pytest.importorskip("gradio")
PHOTO = photo_png((64, 64), seed=3)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from depth2img import ui

    s = ServerThread(settings(tmp_path_factory.mktemp("ui-cn")))
    ui.mount(s.app)
    with s:
        yield s


def pick(page, elem_id, option):
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def test_section_follows_the_checkpoint_and_generates_like_the_library(browser, server, tmp_path):  # noqa: F811
    from depth2img import load_pipeline

    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    try:
        page = context.new_page()
        page.set_default_timeout(60000)
        page.goto(server.url + "/")
        page.locator("#img2img-generate").wait_for()
        section = page.locator("#img2img-controlnet-accordion")
        assert not section.is_visible()  # "tiny" is SD2-depth: no ControlNet
        pick(page, "top-model", "tiny-sd15 [img2img]")
        section.wait_for(state="visible")
        pick(page, "img2img-controlnet", "tiny-controlnet")
        photo = tmp_path / "photo.png"
        photo.write_bytes(PHOTO)
        page.locator("#img2img-image input[type=file]").set_input_files(str(photo))
        page.locator("#img2img-prompt textarea").fill("a statue")
        set_number(page, "img2img-steps", 4)
        set_number(page, "img2img-strength", 0.75)
        set_number(page, "img2img-seed", 321)
        set_number(page, "img2img-control_weight", 0.6)
        page.locator("#img2img-image img").wait_for()
        page.locator("#img2img-generate").click()
        page.wait_for_function("document.querySelector('#img2img-infotext textarea').value.includes('ControlNet 0')")
        shot(page, "controlnet")
        got = fetch(server, page.locator("#img2img-gallery img").first.get_attribute("src"))
        want = load_pipeline("tiny-sd15", controlnet="tiny-controlnet").generate(
            image=Image.open(io.BytesIO(PHOTO)), prompt="a statue", steps=4, strength=0.75, seed=321, control_weight=0.6)
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want.images[0]))
        pick(page, "top-model", "tiny [depth]")
        section.wait_for(state="hidden")
    finally:
        context.close()
