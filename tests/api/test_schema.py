"""The OpenAPI schema is served and describes every endpoint of the original specification."""

import pytest
import yaml

from tests.conftest import SEED_EXPERIENCE

pytestmark = pytest.mark.django_db


def test_schema_lists_every_endpoint(anonymous):
    response = anonymous.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    for path in ("/select_replica", "/record_experience", "/train", "/save_model", "/stats", "/health"):
        assert path in schema["paths"], path
    train_params = {p["name"] for p in schema["paths"]["/train"]["post"]["parameters"]}
    assert {"batch_size", "iterations"} <= train_params


def test_docs_page_is_served(anonymous):
    assert anonymous.get("/api/docs/").status_code == 200


def body_validator(client, component: str):
    """A JSON Schema validator of the served schema's `component`."""
    import jsonschema

    schema = yaml.safe_load(client.get("/api/schema/").content)
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{component}", "components": schema["components"]}
    )


@pytest.mark.parametrize("token", ["", " ", "a b", "x" * 32_769, "ab\u0000", "abc=", 42, None])
def test_a_decision_id_the_schema_refuses_validation_refuses_naming_it(client, token):
    body = {key: value for key, value in SEED_EXPERIENCE.items() if key not in ("state", "action")}
    body["decision_id"] = token
    assert not body_validator(client, "ExperienceReport").is_valid(body)
    response = client.post("/record_experience", body, format="json")
    assert response.status_code == 400 and "decision_id" in response.json()


def test_a_decision_id_the_schema_accepts_is_refused_only_for_its_signature(client):
    body = {key: value for key, value in SEED_EXPERIENCE.items() if key not in ("state", "action")}
    for token in ("x", "A-_z" * 256):
        body["decision_id"] = token
        assert body_validator(client, "ExperienceReport").is_valid(body)
        refused = client.post("/record_experience", body, format="json").json()
        assert list(refused) == ["decision_id"] and "issued by this service" in refused["decision_id"][0]


def test_a_report_holding_experiences_is_the_batch_form_for_the_schema_as_for_the_service(client):
    body = {**SEED_EXPERIENCE, "experiences": [SEED_EXPERIENCE, SEED_EXPERIENCE]}
    assert body_validator(client, "ExperienceReport").is_valid(body)
    response = client.post("/record_experience", body, format="json")
    assert response.status_code == 201 and response.json()["stored"] == 2
