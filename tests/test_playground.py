"""The playground page end to end in headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from contract.samplers import SAMPLERS
from tests.processes import Stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# In CI a missing browser is a failure (.ci/run installs it); elsewhere the test says why it cannot run.
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install -y chromium); .ci/run installs it",
)


async def test_submit_from_the_page_shows_progress_previews_and_the_image(stack: Stack, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(stack.base_url + "/")
            # The sampler choices are the contract's registry, every one of them.
            choices = await page.eval_on_selector_all("#sampler option", "options => options.map(o => o.value)")
            assert choices == list(SAMPLERS)
            await page.fill("#key", stack.key)
            await page.fill("#prompt", "a red fox in the snow")
            for field, value in (("#width", "256"), ("#height", "192"), ("#steps", "12"), ("#seed", "5")):
                await page.fill(field, value)
            assert '"steps":12' in (await page.text_content("#curl") or "")
            await page.click("#generate")

            # Progress advances: a step is shown before the job ends, then the preview and the final image.
            await page.wait_for_function("Number(document.getElementById('bar').dataset.step || 0) >= 1")
            await page.wait_for_selector("#state[data-state=completed]", timeout=60_000)
            await page.wait_for_selector("#result[data-loaded=true]", timeout=30_000)
            preview = await page.get_attribute("#preview-image", "src")
            assert preview is not None and preview.startswith("data:image/jpeg;base64,")
            assert await page.evaluate("document.getElementById('bar').value") == 1
            size = await page.evaluate(
                "[document.getElementById('result').naturalWidth, document.getElementById('result').naturalHeight]"
            )
            assert size == [256, 192]
            job_id = await page.get_attribute("#run", "data-job-id")
            await page.wait_for_selector(f"#recent li[data-job-id='{job_id}']")
            await page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)  # an artifact outside the repo
            assert errors == []
        finally:
            await browser.close()
