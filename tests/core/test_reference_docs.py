"""The route table and the settings table are the only lists: the docs generated from them must match."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from flcore.domain import config
from flcore.edge import api, routes

ROOT = Path(__file__).resolve().parents[2]


def test_the_api_reference_is_the_route_table():
    assert (ROOT / "docs" / "api.md").read_text() == routes.reference(), (
        "run: python -m flcore.edge.routes > docs/api.md"
    )
    assert len(routes.BY_NAME) == len(routes.ROUTES)  # no action declared twice


def test_the_settings_reference_is_the_settings_table():
    assert (ROOT / "docs" / "settings.md").read_text() == config.reference(), (
        "run: python -m flcore.domain.config > docs/settings.md"
    )


def test_every_job_setting_is_defined_once_with_its_range_or_choices():
    names = {f.name for f in fields(config.JobConfig)} - {
        "strategy_params",
        "data",
        "dp",
        "secure_aggregation",
    }  # blocks
    assert names == set(config.BY_NAME)
    for s in config.SETTINGS:
        assert s.doc, s.name
        assert s.choices or s.lo is not None or s.name == "model", f"{s.name} has neither a range nor choices"
    assert config.parse_config({}).to_dict()["lr"] == config.DATASET_DEFAULTS["mnist"]["lr"]


def test_job_settings_answers_what_the_forms_are_built_from(db_name):
    status, reply = api.handle("job_settings", b"{}", {})
    assert status == 200
    by_name = {s["name"]: s for s in reply["settings"]}
    assert by_name["lr"]["updatable"] and by_name["lr"]["type"] == "float" and by_name["lr"]["form"]
    assert not by_name["num_clients"]["updatable"]
    assert by_name["mode"]["choices"] == ["sync", "async"] and by_name["buffer_size"]["modes"] == ["async"]
    assert {s["name"] for s in reply["strategy_settings"]} >= {"proximal_mu", "server_lr"}
