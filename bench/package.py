"""Deployable size and cold import time of the function (issue: Lambda container image and zip).

Builds the same file set `serverless package` zips (serverless.yml's patterns
plus server_aws/requirements.txt installed for Lambda's Linux), measures the zip
and its unzipped size, then imports the handler from the unzipped folder in
fresh processes (no torch, no project on sys.path) and reports the median.

    .venv/bin/python bench/package.py     -> bench/results/package.json
"""

from __future__ import annotations

import json
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


def build(dest: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(ROOT / "server_aws" / "requirements.txt"),
                    "--target", str(dest), "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                    "--only-binary=:all:"], check=True)
    shutil.copytree(ROOT / "flcore", dest / "flcore", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "flcore" / "models.py").unlink()
    (dest / "flcore" / "data.py").unlink()
    (dest / "server_aws").mkdir()
    for name in ("__init__.py", "handler.py"):
        shutil.copy(ROOT / "server_aws" / name, dest / "server_aws" / name)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def zip_dir(src: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(src))


def cold_import_seconds(pkg: Path) -> float:
    code = ("import time, sys; t = time.perf_counter(); import server_aws.handler; "
            "print(time.perf_counter() - t); assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(pkg)!r}); {code}"],
                         cwd=pkg, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "pkg"
        build(pkg)
        zip_path = Path(tmp) / "function.zip"
        zip_dir(pkg, zip_path)
        cold_import_seconds(pkg)  # warm the OS file cache once; Lambda reads from a warm disk too
        times = [cold_import_seconds(pkg) for _ in range(RUNS)]
        result = {
            "zip_mb": round(zip_path.stat().st_size / 2**20, 2),
            "unzipped_mb": round(dir_size(pkg) / 2**20, 2),
            "lambda_unzipped_limit_mb": 250,
            "cold_import_s_median": round(statistics.median(times), 3),
            "cold_import_s_all": [round(t, 3) for t in times],
            "runs": RUNS,
            "python": sys.version.split()[0],
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
