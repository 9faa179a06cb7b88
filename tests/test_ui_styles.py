"""The UI's style picker in real Chromium: it offers the server's --styles-file styles, and picking two
sends them as the request's ``styles``: the picture equals the native API's for the same request, and
the infotext's prompt is the styles.csv merge done by hand here."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from depth2img.infotext import parse_infotext
from tests.test_server_util import ServerThread, b64, photo_png, settings, wait_state
from tests.test_ui import CHROMIUM, set_number

sync_api = pytest.importorskip("playwright.sync_api")
PHOTO = photo_png((64, 64), seed=4)
STYLES = 'name,prompt,negative_prompt\nmarble,"{prompt}, carved in marble",blurry\nnight,at night,lowres\nunused,x,y\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from depth2img import ui

    root = tmp_path_factory.mktemp("ui-styles")
    (root / "styles.csv").write_text(STYLES, encoding="utf-8")
    s = ServerThread(settings(root, styles_file=root / "styles.csv"))
    ui.mount(s.app)
    with s:
        yield s


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(30000)
        page.goto(server.url + "/")
        page.locator("#img2img-generate").wait_for()
        yield page
        browser.close()


def pick(page, elem_id, name):
    page.locator("#img2img-prompt textarea").click()  # out of the dropdown, then open it again
    page.locator(f"#{elem_id} input").first.click()
    page.locator(f'#{elem_id} li[role=option][aria-label="{name}"]').click()


def test_style_picker_offers_the_servers_styles_and_applies_them(page, server, tmp_path):
    box = page.locator("#img2img-styles input").first
    box.click()
    options = page.locator("#img2img-styles li[role=option]")
    options.first.wait_for()
    assert [options.nth(i).get_attribute("aria-label") for i in range(options.count())] == ["marble", "night", "unused"]
    pick(page, "img2img-styles", "marble")
    pick(page, "img2img-styles", "night")
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO)
    page.locator("#img2img-image input[type=file]").set_input_files(str(photo))
    page.locator("#img2img-prompt textarea").fill("a cat")
    set_number(page, "img2img-steps", 3)
    set_number(page, "img2img-seed", 77)
    page.locator("#img2img-image img").wait_for()
    page.locator("#img2img-generate").click()
    page.wait_for_function("document.querySelector('#img2img-infotext textarea').value.includes('Seed: 77')")
    infotext = page.locator("#img2img-infotext textarea").input_value()
    parsed = parse_infotext(infotext)
    assert parsed["Prompt"] == "a cat, carved in marble, at night" and parsed["Negative prompt"] == "blurry, lowres"
    assert parsed["Styles"] == "marble, night"

    with httpx.Client(base_url=server.url, timeout=60) as api:
        job = api.post("/api/v1/jobs", json={"image": b64(PHOTO), "prompt": "a cat", "steps": 3, "seed": 77,
                                             "styles": ["marble", "night"]}).json()
        assert wait_state(api, job["id"])["state"] == "done"
        want = Image.open(io.BytesIO(api.get(f"/api/v1/jobs/{job['id']}/images/0").content))
        src = page.locator("#img2img-gallery img").first.get_attribute("src")
        got = Image.open(io.BytesIO(api.get(src if src.startswith("http") else server.url + src).content))
    assert infotext == want.info["parameters"]
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want.convert("RGB")))
