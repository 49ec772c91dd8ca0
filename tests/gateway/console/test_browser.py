"""The console in a real browser (Debian's Chromium through Playwright) against the real gateway, a real
scheduler and the mock cloud, whose servers are local worker processes: sign in, deploy, watch the
instance go ready without reloading, read its timeline and volumes, chat in the playground, create and
revoke a key, terminate; and the failure paths. Each page is saved as a screenshot."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiopg
import chromium
import pytest
import redis.asyncio as aioredis
from console_pages import EMAIL, PASSWORD
from mock_cloud import reaping_mock_cloud
from playwright.async_api import Browser, Page, async_playwright, expect
from waiting import wait_until

from gateway.app import create_app
from gateway.console.users import create_user
from inventiv import redis_keys
from inventiv.settings import Settings
from scheduler.driver import Driver
from scheduler.runtime import ProviderSet, Runtime
from sql.pool import transaction

SMALL = "Qwen/Qwen2.5-0.5B-Instruct"
# A mock worker is a fresh Python process; on a loaded 2-core machine it answers within a minute.
READY_TIMEOUT_MS = 90_000
# The console refreshes every 2 s; a few refreshes.
LIVE_TIMEOUT_MS = 15_000
# How often the scheduler loop of this test runs its due passes (the daemon's tick in production).
_SCHEDULER_TICK_S = 0.2


@dataclass
class Live:
    base: str
    page: Page
    browser: Browser
    pool: aiopg.Pool
    redis: aioredis.Redis
    settings: Settings
    shots: Path

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    async def sign_in(self, password: str = PASSWORD) -> None:
        await self.page.goto(f"{self.base}/console/sign-in")
        await self.page.fill("input[name=email]", EMAIL)
        await self.page.fill("input[name=password]", password)
        await self.page.click("button[type=submit]")


async def _schedule_forever(driver: Driver) -> None:
    while True:
        await driver.run_due()
        await asyncio.sleep(_SCHEDULER_TICK_S)


@pytest.fixture
async def live(aiohttp_server: Any, settings: Settings, db_pool: aiopg.Pool, redis: aioredis.Redis,
               tmp_path: Path) -> AsyncIterator[Live]:
    executable = chromium.require()
    settings = settings.replace(scheduler_tick_s=0.05, scheduler_retry_base_s=0.05, scheduler_retry_max_s=0.5)
    async with transaction(db_pool) as conn:
        org = await conn.cursor()
        await org.execute("SELECT id FROM organizations WHERE slug = 'demo'")
        (org_id,) = await org.fetchone()
        await create_user(conn, org_id, EMAIL, PASSWORD)
    server = await aiohttp_server(create_app(settings))
    async with reaping_mock_cloud(settings.mock_cloud_path), aiohttp.ClientSession() as http:
        runtime = Runtime(settings, db_pool, redis, ProviderSet(settings), http)
        driver = Driver(runtime, random.Random(0))
        scheduler = asyncio.create_task(_schedule_forever(driver))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable)
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(LIVE_TIMEOUT_MS)
            try:
                yield Live(f"http://127.0.0.1:{server.port}", page, browser, db_pool, redis, settings,
                           chromium.screenshot_dir(tmp_path / "screenshots"))
            finally:
                await browser.close()
                scheduler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scheduler
                await driver.close()
                await runtime.close()


@pytest.mark.timeout(300)
async def test_an_operator_deploys_chats_and_terminates(live: Live) -> None:
    page = live.page
    # Signed out, the console sends you to sign in; a wrong password says so.
    await page.goto(f"{live.base}/console/fleet")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    await live.sign_in("not the password")
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    await live.shot("sign-in")
    await live.sign_in()
    await expect(page).to_have_url(re.compile(r"/console/fleet$"))

    # Deploy: the form shows the API's errors beside their fields, then makes the instance.
    await page.goto(f"{live.base}/console/deploy")
    await page.click("#deploy")
    await expect(page.locator("#error-instance_type_id")).to_contain_text("instance_type_id")
    await live.shot("deploy")
    for select, code in (("#instance_type_id", "MOCK-GPU-S"), ("#zone_id", "local-1")):
        value = await page.locator(f'{select} option[data-code="{code}"]').get_attribute("value")
        await page.select_option(select, value)
    # Availability: a mock GPU type is offered in no Scaleway zone, so those cannot be picked.
    await expect(page.locator('#zone_id option[data-code="fr-par-2"]')).to_be_disabled()
    await expect(page.locator('#zone_id option[data-code="local-1"]')).to_be_enabled()
    await page.select_option("#model_id", label=SMALL)
    await page.fill("#data_volume_gb", "10")
    await page.click("#deploy")
    await expect(page).to_have_url(re.compile(r"/console/instances/[0-9a-f-]{36}$"))
    instance_id = page.url.rsplit("/", 1)[1]

    # The fleet goes ready without a reload: the page's own state survives the wait.
    await page.goto(f"{live.base}/console/fleet")
    await page.evaluate("window.notReloaded = true")
    row = page.locator(f'tr[data-instance="{instance_id}"]')
    await expect(row).to_be_visible()
    await expect(row).to_have_attribute("data-status", "ready", timeout=READY_TIMEOUT_MS)
    assert await page.evaluate("window.notReloaded === true")
    await expect(row).to_contain_text("2 (20 + 10 GB)")
    await live.shot("fleet")

    # The instance: its timeline in order, its volumes, its worker's health.
    await row.locator("a").click()
    await expect(page.locator("#worker-status")).to_have_text("ready")
    steps = await page.locator(".timeline .action").all_text_contents()
    assert steps[0] == "REQUEST_CREATE" and "PROVIDER_CREATE" in steps and "HEALTH_CHECK" in steps, steps
    assert steps.index("PROVIDER_CREATE") < steps.index("HEALTH_CHECK")
    volumes = page.locator("table.volumes tbody tr")
    await expect(volumes).to_have_count(2)
    await expect(volumes.filter(has_text="boot")).to_contain_text("20 GB")
    await expect(volumes.filter(has_text="data")).to_contain_text("10 GB")
    await live.shot("instance")

    # The playground streams an answer and says which instance gave it.
    await page.goto(f"{live.base}/console/playground")
    await page.select_option("#pg-model", SMALL)
    await page.fill("#pg-input", "Hello there")
    await page.click("#pg-send")
    await expect(page.locator(".msg.assistant.done")).to_have_count(1, timeout=30_000)
    assert (await page.locator(".msg.assistant").text_content() or "").strip()
    await expect(page.locator("#pg-instance")).to_have_text(instance_id)
    await expect(page.locator("#pg-ttft")).to_have_text(re.compile(r"^\d+ ms$"))
    await expect(page.locator("#pg-tokens")).to_have_text(re.compile(r"^\d+ in, \d+ out$"))
    await live.shot("playground")

    # Keys: created (shown once), listed, revoked.
    await page.goto(f"{live.base}/console/keys")
    await page.fill("#key-name", "ci pipeline")
    await page.click("#create-key")
    await expect(page.locator("#new-key")).to_have_text(re.compile(r"^ik_"))
    await live.shot("keys")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.locator('tr[data-key-name="ci pipeline"] button').click()
    await expect(page.locator('tr[data-key-name="ci pipeline"]')).to_contain_text("revoked")
    await expect(page.locator("#new-key")).to_have_count(0)

    # Usage shows the playground's request once the usage writer has stored it.
    await _wait_for_usage(live)
    await page.goto(f"{live.base}/console/usage")
    await expect(page.locator("#usage-totals")).to_contain_text("1 requests")
    await expect(page.locator("svg.chart").first).to_be_visible()
    await live.shot("usage")
    await page.goto(f"{live.base}/console/catalog")
    await live.shot("catalog")

    # Terminate, after confirming; the timeline shows it happen.
    await page.goto(f"{live.base}/console/instances/{instance_id}")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#terminate")
    await expect(page.locator("#instance-status")).to_have_text("terminated", timeout=READY_TIMEOUT_MS)
    steps = await page.locator(".timeline .action").all_text_contents()
    assert steps.index("REQUEST_TERMINATE") > steps.index("HEALTH_CHECK"), steps
    # Both volumes were deleted with the server (delete-on-terminate), and say when.
    deleted_at = await page.locator("table.volumes tbody tr td:last-child").all_text_contents()
    assert len(deleted_at) == 2 and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", d) for d in deleted_at)


async def _wait_for_usage(live: Live) -> None:
    """Until the gateway's usage writer has stored a record (it writes batches from a Redis stream)."""

    async def stored() -> int:
        async with live.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT count(*) FROM finops.inference_usage")
            (count,) = await cur.fetchone()
        return int(count)

    await wait_until(stored, timeout_s=LIVE_TIMEOUT_MS / 1000, interval_s=_SCHEDULER_TICK_S, what="a usage record")


async def test_failure_paths_in_the_browser(live: Live) -> None:
    page = live.page
    await live.sign_in()
    await expect(page).to_have_url(re.compile(r"/console/fleet$"))

    # Another organization's instance does not exist, as far as this user can tell.
    async with live.pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("INSERT INTO organizations (slug, name) VALUES ('other', 'Other') RETURNING id")
        (other,) = await cur.fetchone()
        await cur.execute(
            "INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, organization_id, status,"
            " worker_port) SELECT p.id, z.id, t.id, m.id, %s, 'ready', 8000 FROM providers p, zones z,"
            " instance_types t, models m WHERE p.code = 'mock' AND z.code = 'local-1' AND t.code = 'MOCK-GPU-S'"
            " AND m.hf_repo_id = %s RETURNING id", (other, SMALL))
        (theirs,) = await cur.fetchone()
    response = await page.goto(f"{live.base}/console/instances/{theirs}")
    assert response is not None and response.status == 404
    await expect(page.get_by_role("alert")).to_have_text("No such instance.")
    await page.goto(f"{live.base}/console/fleet")
    await expect(page.locator(f'tr[data-instance="{theirs}"]')).to_have_count(0)

    # A form posted without the session's CSRF token is refused, even with the cookie.
    refused = await page.request.post(f"{live.base}/console/keys", form={"name": "forged", "scopes": "admin"})
    assert refused.status == 403 and "csrf_token_invalid" in await refused.text()

    # An expired session sends the browser back to sign in, from a page and from a live refresh.
    prefix = redis_keys.key(live.settings, redis_keys.CONSOLE_SESSION.format(digest=""))
    await redis_keys.delete_prefix(live.redis, prefix)
    await expect(page).to_have_url(re.compile(r"/console/sign-in"), timeout=LIVE_TIMEOUT_MS)
    await page.goto(f"{live.base}/console/keys")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next=(%2F|/)console(%2F|/)keys$"))
