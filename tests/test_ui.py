"""The web UI in real Chromium (Playwright + Debian's chromium) against a server on loopback, tiny model.

One server (UI mounted at "/", HTTP Basic on) and one browser for the module. Results are compared
with the native API's for the same request, and with pixel arithmetic done here.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.test_server_util import ServerThread, photo_png, png_bytes, settings, wait_state, b64

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AUTH = ("ui", "secret-pass")
PHOTO = photo_png((64, 64), seed=3)
ARTIFACTS = Path(os.environ.get("DEPTH2IMG_UI_ARTIFACTS", "artifacts/ui"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from depth2img import ui

    s = ServerThread(settings(tmp_path_factory.mktemp("ui"), auth=(AUTH,)))
    ui.mount(s.app)
    with s:
        yield s


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: the README's test command installs it (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        yield b
        b.close()


class Page:
    """A page with every request and console error recorded."""

    def __init__(self, browser, server):
        self.context = browser.new_context(http_credentials={"username": AUTH[0], "password": AUTH[1]},
                                           viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(30000)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.server = server

    def open(self):
        self.page.goto(self.server.url + "/")
        self.page.locator("#img2img-generate").wait_for()
        return self.page

    def foreign(self):
        return [u for u in self.requests if not u.startswith(self.server.url + "/") and not u.startswith(("data:", "blob:"))]


@pytest.fixture()
def ui(browser, server):
    p = Page(browser, server)
    yield p
    p.context.close()


@pytest.fixture()
def api(server):
    with httpx.Client(base_url=server.url, timeout=60, auth=AUTH) as c:
        yield c


def set_number(page, elem_id, value):
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def fetch(server, url) -> Image.Image:
    if url.startswith("/"):
        url = server.url + url
    return Image.open(io.BytesIO(httpx.get(url, auth=AUTH, timeout=30).content))


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_page_needs_auth(server):
    assert httpx.get(server.url + "/", timeout=10).status_code == 401
    assert httpx.get(server.url + "/", auth=AUTH, timeout=10).status_code == 200


def test_img2img_equals_the_native_api_and_stays_on_the_server(ui, api, server, tmp_path):
    page = ui.open()
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO)
    page.locator("#img2img-image input[type=file]").set_input_files(str(photo))
    page.locator("#img2img-prompt textarea").fill("a red house")
    set_number(page, "img2img-steps", 4)
    set_number(page, "img2img-strength", 0.5)
    set_number(page, "img2img-seed", 1234)
    page.locator("#img2img-image img").wait_for()
    page.locator("#img2img-generate").click()
    page.locator("#img2img-gallery img").first.wait_for()
    page.locator("#img2img-depth-used img").wait_for()
    page.wait_for_function("document.querySelector('#img2img-infotext textarea').value.includes('Seed: 1234')")
    infotext = page.locator("#img2img-infotext textarea").input_value()
    shot(page, "img2img")

    job = api.post("/api/v1/jobs", json={"image": b64(PHOTO), "prompt": "a red house", "steps": 4, "strength": 0.5,
                                         "seed": 1234}).json()
    assert wait_state(api, job["id"])["state"] == "done"
    want = Image.open(io.BytesIO(api.get(f"/api/v1/jobs/{job['id']}/images/0").content))
    assert infotext == want.info["parameters"]
    got = fetch(server, page.locator("#img2img-gallery img").first.get_attribute("src"))
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want.convert("RGB")))
    depth_want = np.asarray(Image.open(io.BytesIO(api.get(f"/api/v1/jobs/{job['id']}/depth").content)))
    depth_got = np.asarray(fetch(server, page.locator("#img2img-depth-used img").get_attribute("src")).convert("L"))
    assert np.abs(depth_got.astype(int) - np.round(depth_want / 257).astype(int)).max() <= 1
    assert ui.foreign() == [], ui.foreign()
    assert ui.errors == [], ui.errors
    assert any(u.startswith(server.url) for u in ui.requests)


def test_text_file_as_image_is_a_readable_error(ui, tmp_path):
    page = ui.open()
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture\n" * 20)
    page.locator("#img2img-image input[type=file]").set_input_files(str(bad))
    page.locator("#img2img-prompt textarea").fill("x")
    page.locator("#img2img-generate").click()
    error = page.locator("#img2img-status .d2i-error")
    error.wait_for()
    text = error.inner_text()
    assert "image" in text and "Traceback" not in text and len(text) < 300, text


def test_inpaint_brush_stroke_leaves_the_rest_unchanged(ui, tmp_path):
    page = ui.open()
    page.get_by_role("tab", name="inpaint").click()
    page.locator("#inpaint-editor canvas").first.wait_for(state="attached")
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO)
    page.locator("#inpaint-editor input[type=file]").set_input_files(str(photo))
    page.get_by_role("button", name="Brush", exact=True).click()
    box = page.locator("#inpaint-editor canvas").first.bounding_box()
    # a horizontal stroke through the middle of the upper-left quarter of the picture
    y = box["y"] + box["height"] * 0.3
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    for f in (0.45, 0.5):
        page.mouse.move(box["x"] + box["width"] * f, y)
    page.mouse.up()
    page.locator("#inpaint-prompt textarea").fill("a blue door")
    set_number(page, "inpaint-steps", 4)
    set_number(page, "inpaint-seed", 7)
    set_number(page, "inpaint-strength", 1)
    page.locator("#inpaint-generate").click()
    page.locator("#inpaint-status", has_text="1 image(s)").wait_for()  # the gallery shows step previews before
    shot(page, "inpaint")
    got = np.asarray(fetch(ui.server, page.locator("#inpaint-gallery img").first.get_attribute("src")).convert("RGB"))
    original = np.asarray(Image.open(io.BytesIO(PHOTO)).convert("RGB"))
    changed = np.abs(got.astype(int) - original).max(axis=2) > 0
    assert changed.any(), "the stroke repainted nothing"
    ys, xs = np.nonzero(changed)
    # everything repainted lies near the stroke: within the stroke's band dilated by brush + blur (3 sigma)
    h, w = changed.shape
    assert ys.max() < h * 0.6 and xs.max() < w, (ys.min(), ys.max(), xs.min(), xs.max())
    assert not changed[int(h * 0.65):].any(), "pixels far below the stroke changed"
    assert ui.errors == [], ui.errors


def test_depth_tab_3d_view_draws_and_follows_the_mouse(ui, tmp_path):
    page = ui.open()
    page.get_by_role("tab", name="depth").click()
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO)
    page.locator("#depth-image input[type=file]").set_input_files(str(photo))
    page.locator("#depth-image img").wait_for()
    page.locator("#depth-estimate").click()
    page.locator("#depth-shown img").wait_for()
    page.wait_for_function("window.depth2imgParallax && window.depth2imgParallax.state.src !== null")
    read = """() => { const c = document.getElementById('d2i-parallax-canvas');
                      return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }"""
    before = np.array(page.evaluate(read))
    assert before.reshape(-1, 4)[:, :3].std() > 1, "the 3-D view is blank"
    box = page.locator("#d2i-parallax-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.95, box["y"] + box["height"] * 0.95)
    page.wait_for_timeout(300)
    after = np.array(page.evaluate(read))
    assert (before != after).any(), "the 3-D view did not change when the mouse moved"
    shot(page, "depth")
    assert ui.errors == [], ui.errors


def value_of(page, elem_id):
    """The shown value of a form component: its number box, text area or dropdown input."""
    box = page.locator(f"#{elem_id}").locator("input[type=number], textarea, input[role=listbox], input").first
    return box.input_value()


def open_depth(page, prefix):
    """Open the tab's Depth accordion (its components are rendered only when open)."""
    page.locator(f"#{prefix}-depth-accordion").get_by_text("Depth", exact=True).first.click()
    page.locator(f"#{prefix}-depth_strength").wait_for()


def test_png_info_sends_the_parameters_to_img2img(ui, api, tmp_path):
    from depth2img.a1111 import SAMPLERS

    known = {"prompt": "a tall lighthouse", "negative_prompt": "blurry", "steps": 3, "guidance_scale": 5.5,
             "seed": 4321, "scheduler": "euler_a", "strength": 0.7, "width": 48, "height": 40, "depth_strength": 0.5}
    job = api.post("/api/v1/jobs", json={"image": b64(PHOTO), **known}).json()
    assert wait_state(api, job["id"])["state"] == "done"
    made = tmp_path / "made.png"
    made.write_bytes(api.get(f"/api/v1/jobs/{job['id']}/images/0").content)

    page = ui.open()
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#pnginfo-image input[type=file]").set_input_files(str(made))
    page.wait_for_function("document.querySelector('#pnginfo-text textarea').value.includes('Seed: 4321')")
    assert page.locator("#pnginfo-text textarea").input_value() == Image.open(made).info["parameters"]
    page.locator("#pnginfo-send-img2img").click()
    page.wait_for_function("document.querySelector('#img2img-prompt textarea').value === 'a tall lighthouse'")
    assert page.get_by_role("tab", name="img2img").get_attribute("aria-selected") == "true"
    open_depth(page, "img2img")
    shot(page, "pnginfo-sent")
    got = {name: value_of(page, f"img2img-{name}") for name in known}
    want = {**{k: str(v) for k, v in known.items()}, "scheduler": SAMPLERS["euler_a"].name}
    assert got == want

    page.get_by_role("tab", name="PNG info").click()
    page.locator("#pnginfo-send-inpaint").click()
    page.wait_for_function("(document.querySelector('#inpaint-prompt textarea') || {}).value === 'a tall lighthouse'")
    assert page.get_by_role("tab", name="inpaint").get_attribute("aria-selected") == "true"
    assert value_of(page, "inpaint-seed") == "4321"
    assert ui.errors == [], ui.errors


def test_interrupt_stops_a_long_job_and_the_next_one_runs(ui, server, tmp_path):
    page = ui.open()
    photo = tmp_path / "small.png"
    photo.write_bytes(photo_png((32, 32), seed=5))
    page.locator("#img2img-image input[type=file]").set_input_files(str(photo))
    page.locator("#img2img-image img").wait_for()
    page.locator("#img2img-prompt textarea").fill("a long job")
    set_number(page, "img2img-steps", 1000)
    set_number(page, "img2img-seed", 11)
    page.locator("#img2img-generate").click()
    page.locator("#img2img-status", has_text="step ").wait_for()
    job_id = server.services.worker.current.job_id
    page.locator("#img2img-interrupt").click()
    page.locator("#img2img-status", has_text="interrupted").wait_for(timeout=10000)
    job = server.services.store.get(job_id)
    assert job.state == "cancelled" and job.error == "interrupted", (job.state, job.error)
    # stopped mid-run (no timing asserted: the wait above is only a hang guard): no image of the 1000 steps was made
    assert job.n_images == 0 and not job.infotexts, (job.n_images, job.infotexts)
    assert server.services.worker.current is None
    shot(page, "interrupted")

    set_number(page, "img2img-steps", 2)
    page.locator("#img2img-generate").click()
    page.locator("#img2img-status", has_text="1 image(s)").wait_for()
    assert ui.errors == [], ui.errors


def test_own_depth_map_upload_is_the_depth_used(ui, server, tmp_path):
    page = ui.open()
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO)
    # a full-range left-to-right gradient at the photo's size: the 16-bit map the job stores is v * 257,
    # so the 8-bit view must give v back (±1 for rounding); no resize, so nothing else may differ
    gradient = np.tile(np.round(np.linspace(0, 255, 64)).astype(np.uint8), (64, 1))
    depth = tmp_path / "depth.png"
    Image.fromarray(gradient).save(depth)
    page.locator("#img2img-image input[type=file]").set_input_files(str(photo))
    page.locator("#img2img-image img").wait_for()
    open_depth(page, "img2img")
    page.locator("#img2img-depth_map input[type=file]").set_input_files(str(depth))
    page.locator("#img2img-depth_map img").wait_for()
    page.locator("#img2img-prompt textarea").fill("a ramp")
    set_number(page, "img2img-steps", 2)
    set_number(page, "img2img-seed", 3)
    page.locator("#img2img-generate").click()
    page.locator("#img2img-status", has_text="1 image(s)").wait_for()
    assert "Depth: own map" in page.locator("#img2img-infotext textarea").input_value()
    shown = np.asarray(fetch(server, page.locator("#img2img-depth-used img").get_attribute("src")).convert("L"))
    assert shown.shape == gradient.shape
    assert np.abs(shown.astype(int) - gradient).max() <= 1
    assert ui.errors == [], ui.errors


def test_last_used_settings_survive_a_reload(ui):
    page = ui.open()
    page.locator("#img2img-prompt textarea").fill("remember me")
    set_number(page, "img2img-steps", 7)
    page.wait_for_timeout(1000)  # the save is one request per change
    page.reload()
    page.locator("#img2img-generate").wait_for()
    page.wait_for_function("document.querySelector('#img2img-prompt textarea').value === 'remember me'")
    page.wait_for_function("document.querySelector('#img2img-steps input[type=number]').value === '7'")
    page.get_by_role("tab", name="inpaint").click()
    assert page.locator("#inpaint-prompt textarea").input_value() == ""  # the other tab keeps its own
    assert ui.errors == [], ui.errors


def test_sweep_tab_draws_the_strength_grid(ui, server, tmp_path):
    page = ui.open()
    page.get_by_role("tab", name="sweep").click()
    photo = tmp_path / "small.png"
    photo.write_bytes(photo_png((32, 32), seed=8))
    page.locator("#sweep-image input[type=file]").set_input_files(str(photo))
    page.locator("#sweep-image img").wait_for()
    page.locator("#sweep-prompt textarea").fill("a sweep")
    set_number(page, "sweep-steps", 2)
    set_number(page, "sweep-seed", 9)
    page.locator("#sweep-strengths textarea, #sweep-strengths input").first.fill("0.5,1")
    page.locator("#sweep-run").click()
    page.locator("#sweep-status", has_text="2 cells, seed 9").wait_for()
    shot(page, "sweep")
    grid = fetch(server, page.locator("#sweep-grid img").get_attribute("src"))
    # input, depth map and two strength columns of 32 px, one row, plus the label column and header
    assert grid.width > 4 * 32 and grid.height > 32, grid.size
    assert server.services.store.count("queued") == 0 and server.services.worker.current is None
    assert ui.errors == [], ui.errors
