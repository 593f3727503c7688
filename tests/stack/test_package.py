"""The deployable zip (flcli/package.py): built from PyPI for the runtime, it runs the real handler on its own.

The zip is unpacked and its handler imported with ``python -S -B``: nothing on
the path but the package and the standard library, as on Lambda, and nothing
written. Then it serves real requests against the test database.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile

import pytest

from flcli import package

EVENT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import server_aws.handler as h

def call(action, body):
    event = {"httpMethod": "POST", "path": "/" + action, "pathParameters": {"action": action},
             "headers": {"Authorization": "Bearer op"}, "body": json.dumps(body)}
    out = h.handler(event, None)
    return out["statusCode"], json.loads(out["body"])

import numpy as np
from flcore.shared import modeldef
from flcore.shared import weights

def model(seed):
    rng = np.random.default_rng(seed)
    spec = modeldef.resolve("cnn_mnist", "mnist").spec
    return {k: (rng.standard_normal(shape) * 0.1).astype(np.float32) for k, shape in spec.items()}

code, job = call("start_training", {"num_clients": 1, "clients_per_round": 1, "rounds": 1,
                                    "weights": weights.to_b64(model(0))})
assert code == 200, job
code, sub = call("subscribe", {"job_id": job["job_id"]})
event = {"httpMethod": "POST", "path": "/submit", "pathParameters": {"action": "submit"},
         "headers": {"Authorization": "Bearer " + sub["token"]},
         "body": json.dumps({"round": 1, "weights": weights.to_b64(model(1)), "num_examples": 10})}
assert h.handler(event, None)["statusCode"] == 200
assert call("aggregate", {"job_id": job["job_id"]})[0] == 200
code, status = call("status", {"job_id": job["job_id"]})
code, answer = call("predict", {"job_id": job["job_id"], "inputs": [[[0] * 28] * 28]})
code, bad = call("predict", {"job_id": job["job_id"], "image": "iVBORw0KGgo="})
print(json.dumps({"status": status, "classes": answer["classes"], "bad": [code, bad], "numpy": np.__version__,
                  "modules": sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("torch", "PIL"))}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg") / "serverless-fl.zip"
    return package.build("aws", out)


def test_the_zip_is_small_precompiled_and_runs_the_handler_alone(built, tmp_path, mongodb_url):
    assert package.unzipped_bytes(built) < 50 * 2**20
    with zipfile.ZipFile(built) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "pkg")
    ours = [n for n in names if n.startswith(("flcore/", "server_aws/")) and n.endswith(".py")]
    assert "server_aws/handler.py" in ours and "flcore/shared/png.py" in ours
    for name in ours:  # our code keeps its source, with bytecode beside it
        head, _, file = name.rpartition("/")
        assert f"{head}/__pycache__/{file[:-3]}.cpython-311.pyc" in names, name
    theirs = [n for n in names if not n.startswith(("flcore/", "server_aws/"))]
    assert "numpy/__init__.pyc" in theirs and "pymongo/__init__.pyc" in theirs
    assert not [n for n in theirs if n.endswith((".py", ".pyi", ".h", ".c"))]  # only bytecode
    assert not [n for n in names if ".dist-info/" in n or n.startswith(("numpy/f2py/", "numpy/testing/", "PIL/"))]

    env = {"MONGODB_URL": mongodb_url, "FL_DB_NAME": "package_test", "FL_ADMIN_TOKEN": "op", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-S", "-B", "-c", EVENT, str(tmp_path / "pkg")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"]["state"] == "done" and result["status"]["model_round"] == 1  # aggregated
    assert len(result["classes"]) == 1  # numpy inference with the runtime's numpy (2.2, not this venv's)
    assert result["bad"][0] == 400 and "PNG" in result["bad"][1]["error"]  # png.py runs from the zip
    assert result["modules"] == []  # neither torch nor Pillow


def test_the_same_sources_give_the_same_bytes(tmp_path):
    """Fixed dates and order: rebuilding changes no byte, so a deploy with no change updates nothing."""
    first = package.build("aws", tmp_path / "a" / "f.zip", deps=False)
    second = package.build("aws", tmp_path / "b" / "f.zip", deps=False)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
