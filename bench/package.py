"""Deployable size and cold import time of the function.

Builds the zip as `make package` does (``flcli.package``: dependencies for
Lambda's Linux, trimmed, precompiled), checks that the Serverless Framework
takes it as the artifact it deploys (``serverless package`` records its
SHA-256), measures the zip and its unzipped size, then imports the handler from
the unzipped package in fresh processes (``python -S -B``: nothing on the path
but the package and the standard library, nothing written, as on Lambda) and
reports the median.

    make bench-package     -> bench/results/package.json
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flcli.package import build  # noqa: E402

OUT = ROOT / "bench" / "results" / "package.json"
RUNS = 7


def framework_sha256() -> str:
    """The CodeSha256 that ``serverless package`` writes into the stack for the function."""
    env = {**os.environ, "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off"}
    subprocess.run(
        [str(ROOT / "node_modules" / ".bin" / "serverless"), "package", "--stage", "dev"], cwd=ROOT, env=env, check=True
    )
    stack = json.loads((ROOT / ".serverless" / "cloudformation-template-update-stack.json").read_text())
    return next(
        r["Properties"]["CodeSha256"] for r in stack["Resources"].values() if r["Type"] == "AWS::Lambda::Version"
    )


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cold_import_seconds(pkg: Path) -> float:
    code = (
        "import time, sys; t = time.perf_counter(); import server_aws.handler; "
        "print(time.perf_counter() - t); assert 'torch' not in sys.modules"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-B", "-c", f"import sys; sys.path.insert(0, {str(pkg)!r}); {code}"],
        cwd=pkg,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    zip_path = build("aws")
    ours = base64.b64encode(hashlib.sha256(zip_path.read_bytes()).digest()).decode()
    assert framework_sha256() == ours, "serverless package did not take build/aws/serverless-fl.zip as is"
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "pkg"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(pkg)
            files = len(zf.infolist())
        parts = {
            p.name: round(dir_size(p) / 2**20, 2) if p.is_dir() else round(p.stat().st_size / 2**20, 2)
            for p in sorted(pkg.iterdir())
        }
        unzipped = dir_size(pkg)
        cold_import_seconds(pkg)  # warm the OS file cache once; Lambda reads from a warm disk too
        times = [cold_import_seconds(pkg) for _ in range(RUNS)]
        result = {
            "zip_mb": round(zip_path.stat().st_size / 2**20, 2),
            "unzipped_mb": round(unzipped / 2**20, 2),
            "target_unzipped_mb": 50,
            "files": files,
            "unzipped_mb_by_top_level": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
            "lambda_unzipped_limit_mb": 250,
            "cold_import_s_median": round(statistics.median(times), 3),
            "cold_import_s_all": [round(t, 3) for t in times],
            "target_cold_import_s": 0.28,
            "runs": RUNS,
            "python": sys.version.split()[0],
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
