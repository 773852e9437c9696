"""API keys (the raw key shown once), experiences (database list or Redis summary), beat's schedule."""

from __future__ import annotations

import re

from tests.conftest import SEED_EXPERIENCE


def test_an_api_key_created_in_the_admin_is_shown_once_and_works(operator, anonymous):
    from agent_app.api.auth import digest
    from agent_app.models import ApiKey

    response = operator.post("/admin/agent_app/apikey/add/", {"name": "gateway-eu"}, follow=True)
    page = response.content.decode()
    raw = re.search(r'<code id="new-api-key">(rlk_[^<]+)</code>', page).group(1)
    assert "cannot be shown again" in page
    key = ApiKey.objects.get(name="gateway-eu")
    assert key.digest == digest(raw) and key.prefix == raw[:12] and key.active
    assert raw not in operator.get("/admin/agent_app/apikey/").content.decode()
    assert raw not in operator.get(f"/admin/agent_app/apikey/{key.pk}/change/").content.decode()
    reported = anonymous.post("/record_experience", SEED_EXPERIENCE, format="json",
                              HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert reported.status_code == 201


def test_deactivated_keys_are_refused(operator, anonymous, api_key):
    from agent_app.models import ApiKey

    key = ApiKey.objects.get(name="tests")
    page = operator.get("/admin/agent_app/apikey/").content.decode()
    assert key.prefix in page
    operator.post("/admin/agent_app/apikey/", {"action": "deactivate", "_selected_action": [key.pk]})
    assert not ApiKey.objects.get(pk=key.pk).active
    refused = anonymous.post("/record_experience", SEED_EXPERIENCE, format="json",
                             HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert refused.status_code == 401


def test_experiences_page_lists_the_replay_store(operator, fill, settings):
    fill(30)
    page = operator.get("/admin/agent_app/experience/")
    assert page.status_code == 200
    text = page.content.decode()
    if settings.REPLAY_STORE == "database":
        assert "30 experiences" in text
        failed = operator.get("/admin/agent_app/experience/?success__exact=0").context["cl"].result_count
        succeeded = operator.get("/admin/agent_app/experience/?success__exact=1").context["cl"].result_count
        assert failed + succeeded == 30
    else:
        assert 'id="store-size">30<' in text
        assert text.count("<tr><td>") >= 30  # the newest samples, per replica rows above them
        assert "Mean latency" in text


def test_redis_store_summary_counts_per_replica(client, fill):
    from agent_app.admin import store_summary

    fill(40)
    summary = store_summary()
    assert summary["size"] == 40
    assert sum(row["count"] for row in summary["per_replica"]) == len(summary["recent"]) == 40
    assert all(0 <= row["success"] <= 1 for row in summary["per_replica"])


def test_experiences_cannot_be_edited_or_added(operator):
    assert operator.get("/admin/agent_app/experience/add/").status_code == 403


def test_beat_schedule_is_editable_in_the_admin(operator):
    page = operator.get("/admin/django_celery_beat/").content.decode()
    assert "Periodic tasks" in page and "Intervals" in page
    assert operator.get("/admin/django_celery_beat/periodictask/add/").status_code == 200
