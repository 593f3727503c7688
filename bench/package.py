"""Deployable size and cold import time of the function.

Runs the real ``serverless package`` (serverless.yml's patterns plus
server_aws/requirements.txt installed for Lambda's Linux by
serverless-python-requirements; no AWS account needed), measures the zip and
its unzipped size, then imports the handler from the unzipped package in fresh
processes (``python -S -B``: nothing on the path but the package and the standard
library, nothing written, as on Lambda) and reports the median, with and without the bytecode
that ``make deploy`` keeps in the package.

    make bench-package     -> bench/results/package.json
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "package.json"
RUNS = 7


def package() -> Path:
    # as `make deploy` does: hash-checked bytecode survives the zip's rounded file times
    env = {**os.environ, "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off",
           "SOURCE_DATE_EPOCH": "315532800"}
    subprocess.run([str(ROOT / "node_modules" / ".bin" / "serverless"), "package", "--stage", "dev"],
                   cwd=ROOT, env=env, check=True)
    return ROOT / ".serverless" / "serverless-fl.zip"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cold_import_seconds(pkg: Path) -> float:
    code = ("import time, sys; t = time.perf_counter(); import server_aws.handler; "
            "print(time.perf_counter() - t); assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-S", "-B", "-c", f"import sys; sys.path.insert(0, {str(pkg)!r}); {code}"],
                         cwd=pkg, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    zip_path = package()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "pkg"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(pkg)
            files = len(zf.infolist())
        unzipped = dir_size(pkg)  # as deployed, bytecode included
        cold_import_seconds(pkg)  # warm the OS file cache once; Lambda reads from a warm disk too
        times = [cold_import_seconds(pkg) for _ in range(RUNS)]
        # the same package as the plugin's default `slim` leaves it: no bytecode, so
        # every cold start compiles (/var/task is read-only, nothing is cached)
        for cache in list(pkg.rglob("__pycache__")):
            shutil.rmtree(cache)
        bare = [cold_import_seconds(pkg) for _ in range(RUNS)]
        result = {
            "zip_mb": round(zip_path.stat().st_size / 2**20, 2),
            "unzipped_mb": round(unzipped / 2**20, 2),
            "files": files,
            "lambda_unzipped_limit_mb": 250,
            "cold_import_s_median": round(statistics.median(times), 3),
            "cold_import_s_all": [round(t, 3) for t in times],
            "cold_import_s_median_without_bytecode": round(statistics.median(bare), 3),
            "bytecode_speedup": round(statistics.median(bare) / statistics.median(times), 2),
            "runs": RUNS,
            "python": sys.version.split()[0],
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
