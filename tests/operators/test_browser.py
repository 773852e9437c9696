"""In a real headless Chromium: log in, see the dashboard's charts, change epsilon, take a screenshot,
choose another pool.

Chromium comes from Debian (`apt-get install -y chromium`, which `make test` runs) and is
driven by Playwright without its own browser download. A missing browser fails the test:
it never passes without having run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import random_experience
from tests.operators.conftest import PASSWORD, select

CHROMIUM = "/usr/bin/chromium"
# The screenshot in docs/operations.md is refreshed on request (UPDATE_SCREENSHOT=1), so test runs
# leave the tree clean.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.fail("Chromium is not installed: `apt-get install -y chromium` (make test installs it)")
    return path


@pytest.fixture
def history(client, settings):
    """A few training runs with traffic in between, so every chart has several points."""
    from agent_app.models import AgentConfig

    settings.RL_MIN_TRAINING_STEPS = 4  # the DQN takes over after two runs: the rates move
    AgentConfig.load()
    AgentConfig.objects.filter(pool="default").update(epsilon_decay=0.85)  # and epsilon visibly decays
    rng = np.random.default_rng(7)
    for run, arm in enumerate(("heuristic", "rl", "heuristic", "rl", "rl")):
        for _ in range(8 + 4 * run):
            select(client)
        batch = [{**random_experience(rng), "arm": arm} for _ in range(60)]
        assert client.post("/record_experience", {"experiences": batch}, format="json").status_code == 201
        assert client.post("/train?batch_size=32&iterations=2").status_code == 200


@pytest.fixture
def alpha(client):
    """A second pool, "alpha", trained once for 3 steps: model v1 beside the default pool's v5."""
    from agent_app.replay import get_replay_store
    from agent_app.services.pool_admin import create_pool

    create_pool("alpha")
    store = get_replay_store("alpha")
    store.clear()
    rng = np.random.default_rng(11)
    batch = [random_experience(rng) for _ in range(60)]
    body = {"experiences": batch, "pool": "alpha"}
    assert client.post("/record_experience", body, format="json").status_code == 201
    assert client.post("/train?pool=alpha&batch_size=32&iterations=3").status_code == 200
    yield
    store.clear()


@pytest.mark.django_db(transaction=True)
def test_an_operator_sees_the_charts_and_changes_epsilon_in_a_real_browser(
    live_server, history, alpha, admin_user, settings, tmp_path
):
    screenshot = DOCS_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "dashboard.png"
    from playwright.sync_api import sync_playwright

    from agent_app.models import AgentState, ConfigChange

    # The live server speaks plain HTTP; secure-only cookies would never come back.
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    executable = chromium()
    url = live_server.url
    with sync_playwright() as playwright:  # no ORM inside: Playwright runs an event loop in this thread
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1360, "height": 900},
        )
        try:
            page = browser.new_page()
            page.goto(f"{url}/admin/login/?next=/admin/")
            page.fill("#id_username", admin_user.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{url}/admin/")

            page.click("text=Open the dashboard")
            page.wait_for_url(f"{url}/admin/dashboard/")
            page.wait_for_selector("svg.chart polyline.series")
            assert page.locator("svg.chart").count() == 6
            assert page.locator("svg.chart.empty").count() == 0
            assert page.locator("svg.chart polyline.series").count() >= 8  # 3 replicas on two charts
            box = page.locator("svg.chart").first.bounding_box()
            assert box and box["width"] > 200 and box["height"] > 60  # laid out, not collapsed
            assert page.locator("#ab-results").is_visible()
            epsilon_before = page.inner_text("#figure-epsilon")

            page.goto(f"{url}/admin/agent_app/agentconfig/")  # one row per pool
            page.click("#result_list a:text-is('default')")
            page.fill("#id_epsilon", "0.42")
            page.click("input[name=_save]")
            page.wait_for_selector("ul.messagelist li.info")
            assert "epsilon" in page.inner_text("ul.messagelist")

            page.goto(f"{url}/admin/dashboard/")
            page.wait_for_selector("svg.chart polyline.series")
            assert page.inner_text("#figure-epsilon") == "0.4200" != epsilon_before
            page.screenshot(path=str(screenshot), full_page=True)
            assert page.inner_text("#figure-model-version") == "v5"

            page.select_option("#pool-select", "alpha")  # the page reloads with ?pool=alpha
            page.wait_for_url(f"{url}/admin/dashboard/?pool=alpha")
            assert page.inner_text("#figure-model-version") == "v1"
            assert page.inner_text("#figure-steps") == "3"
            assert page.inner_text("#figure-epsilon") != "0.4200"  # the default pool's change stays there
            assert page.locator("input[type=hidden][name=pool]").first.get_attribute("value") == "alpha"
        finally:
            browser.close()

    assert AgentState.load().epsilon == 0.42
    change = ConfigChange.objects.get(field="epsilon")
    assert (change.username, change.new_value) == (admin_user.username, "0.42")
    assert screenshot.stat().st_size > 10_000
