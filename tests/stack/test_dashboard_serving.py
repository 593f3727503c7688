"""The dashboard is served by the function on GET, on both platforms, built by a repeatable step."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import requests

from flcore.edge import static
from server_ow.__main__ import main as ow_main

ROOT = Path(__file__).resolve().parents[2]


def test_page_and_files_under_serverless_offline(function_url):
    page = requests.get(f"{function_url}/dashboard", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'src="dashboard/app.js"' in page.text and "default-src 'self'" in page.headers["Content-Security-Policy"]
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        resp = requests.get(f"{function_url}/dashboard/{name}", timeout=30)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(kind)
        assert resp.text == (ROOT / "flcore" / "dashboard" / name).read_text()
    assert requests.get(f"{function_url}/dashboard/secrets.py", timeout=30).status_code == 404
    assert requests.get(f"{function_url}/dashboard/..%2Fsettings.py", timeout=30).status_code in (403, 404)


def test_page_and_files_from_the_openwhisk_web_action():
    resp = ow_main({"__ow_method": "get", "__ow_path": "/dashboard"})
    assert resp["statusCode"] == 200 and resp["headers"]["Content-Type"].startswith("text/html")
    js = ow_main({"__ow_method": "get", "__ow_path": "/dashboard/app.js"})
    assert js["headers"]["Content-Type"].startswith("text/javascript") and "u-over" in js["body"]  # uPlot, bundled
    assert ow_main({"__ow_method": "get", "__ow_path": "/dashboard/static.py"})["statusCode"] == 404


def test_assets_are_small_and_the_build_is_repeatable(tmp_path):
    sizes = {name: (static.HERE / name).stat().st_size for name in static.FILES}
    assert sum(sizes.values()) < 300 * 1024, sizes
    npm = shutil.which("node")
    assert npm, "node is installed by make setup"
    subprocess.run(["node", str(ROOT / "dashboard" / "build.mjs"), str(tmp_path)], cwd=ROOT, check=True, timeout=120)
    for name in static.FILES:
        assert filecmp.cmp(tmp_path / name, static.HERE / name, shallow=False), (
            f"flcore/dashboard/{name} is not what dashboard/src builds: run npm run build:dashboard and commit"
        )
