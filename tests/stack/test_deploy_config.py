"""The deploy configurations, as the Serverless Framework itself resolves them.

Both ways of deploying (zip package and container image) must route every
action of the core to the handler (one ``{action}`` route, which the route
table resolves), plus the dashboard and the schedule that closes stale rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVERLESS = ROOT / "node_modules" / ".bin" / "serverless"


def resolved(config: str, *args: str) -> dict:
    env = {**os.environ, "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off"}
    out = subprocess.run(
        [str(SERVERLESS), "print", "--config", config, "--format", "json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout[out.stdout.index("{") :])


@pytest.mark.parametrize("config", ["serverless.yml", "serverless.image.yml"])
def test_every_action_is_routed_and_rounds_are_closed_on_a_schedule(config):
    service = resolved(config, "--stage", "prod", "--region", "eu-west-1")
    assert service["provider"]["stage"] == "prod" and service["provider"]["region"] == "eu-west-1"
    events = service["functions"]["api"]["events"]
    posts = {e["http"]["path"] for e in events if "http" in e and e["http"]["method"] == "post"}
    gets = {e["http"]["path"] for e in events if "http" in e and e["http"]["method"] == "get"}
    assert posts == {"{action}"}
    assert gets == {"dashboard", "dashboard/{file}"}  # the dashboard's page and its files
    assert [e["schedule"] for e in events if "schedule" in e] == [{"rate": ["rate(1 minute)"], "enabled": True}]


def test_zip_runs_the_handler_and_image_runs_the_dockerfile():
    zipped = resolved("serverless.yml")["functions"]["api"]
    image = resolved("serverless.image.yml")
    assert zipped["handler"] == "server_aws/handler.handler" and "image" not in zipped
    name = image["functions"]["api"]["image"]["name"]
    assert "handler" not in image["functions"]["api"]
    assert image["provider"]["ecr"]["images"][name]["file"] == "server_aws/Dockerfile"
    assert 'CMD ["server_aws.handler.handler"]' in (ROOT / "server_aws" / "Dockerfile").read_text()


def test_the_schedule_can_be_turned_off_for_a_local_run(monkeypatch):
    monkeypatch.setenv("FL_SCHEDULE", "false")
    events = resolved("serverless.yml")["functions"]["api"]["events"]
    assert [e["schedule"]["enabled"] for e in events if "schedule" in e] == [False]


def test_deploys_upload_the_built_zip_and_the_local_stack_runs_the_tree(monkeypatch):
    """serverless-offline runs a package.artifact when one is set: the local stack must unset it."""
    assert resolved("serverless.yml")["package"]["artifact"] == "build/aws/serverless-fl.zip"
    monkeypatch.setenv("FL_PACKAGE_ARTIFACT", "")
    assert not resolved("serverless.yml")["package"]["artifact"]
