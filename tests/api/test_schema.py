"""The OpenAPI schema is served and describes every endpoint of the seed."""

import pytest
import yaml

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
