"""The function's deployable zip: dependencies built for the runtime's Linux, trimmed and precompiled.

    python -m flcli.package aws   -> build/aws/serverless-fl.zip   (make package; make deploy uses it)
    python -m flcli.package ow    -> build/ow/action.zip           (scripts/deploy_ow.sh)

Why a builder of our own rather than the Serverless plugin's: the Framework
records the zip's SHA-256 when it packages, so the zip has to be final before
it is handed over, and the plugin offers no step to shrink it. What it does:

- pip installs wheels for the runtime, not for this machine: CPython 3.11 on
  glibc 2.26 (Lambda's python3.11 runs on Amazon Linux 2; a wheel built for a
  newer glibc, as numpy 2.3+ is, installs here but fails to import there);
- drops what the function never imports: numpy's build tools and test modules,
  type stubs, C sources and headers, scripts, package metadata;
- compiles the dependencies to bytecode and ships only that (a Lambda's code is
  read-only, so source without bytecode is compiled again at every cold start,
  and source beside bytecode is dead weight); our own code keeps its source,
  for readable tracebacks, with hash-checked bytecode beside it;
- strips symbol tables from the extension modules, except the libraries a
  wheel vendors under ``*.libs`` (patched by auditwheel: numpy's OpenBLAS no
  longer loads once stripped);
- writes the zip with fixed dates in a fixed order, so the same inputs give the
  same bytes (and the same CodeSha256: no needless function update).
"""

from __future__ import annotations

import argparse
import fnmatch
import py_compile
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PYTHON = (3, 11)
# glibc 2.26 (Amazon Linux 2) and older; OpenWhisk's python:3.11 image has a newer one
PLATFORMS = ("manylinux_2_26_x86_64", "manylinux_2_24_x86_64", "manylinux2014_x86_64")
# path globs (relative to the package root) the function never needs
TRIM = (
    "*.dist-info",
    "*/tests",
    "bin",
    "*.pyi",
    "*.pxd",
    "*.h",
    "*.c",
    "*.pyx",
    "numpy/f2py",
    "numpy/distutils",
    "numpy/testing",
    "numpy/typing",
    "numpy/doc",
    "numpy/_pyinstaller",
    "numpy/conftest.py",
    "numpy/_core/include",
    "numpy/_core/lib",
    "numpy/_core/_simd.*",
    "numpy/_core/_*_tests.*",
    "numpy/random/lib",
    "numpy/random/_examples",
)
# our own files besides flcore/: package path -> repository path
TARGETS = {
    "aws": {
        "out": "build/aws/serverless-fl.zip",
        "requirements": "server_aws/requirements.txt",
        "files": {"server_aws/__init__.py": "server_aws/__init__.py", "server_aws/handler.py": "server_aws/handler.py"},
    },
    "ow": {
        "out": "build/ow/action.zip",
        "requirements": "server_ow/requirements.txt",
        "files": {"__main__.py": "server_ow/__main__.py"},
    },
}


PRIVACY_REQUIREMENTS = "server_aws/requirements-privacy.txt"  # the DP accountant, on request


def build(target: str, out: Path | None = None, deps: bool = True, privacy: bool = False) -> Path:
    """Build ``target``'s zip (``aws`` or ``ow``), with its dependencies unless ``deps`` is false, and the
    DP accountant's where ``privacy`` is set; its path."""
    if sys.version_info[:2] != RUNTIME_PYTHON:
        raise SystemExit(
            f"the bytecode must come from the runtime's Python {'.'.join(map(str, RUNTIME_PYTHON))}; "
            f"this is {sys.version.split()[0]}: run this with python3.11"
        )
    spec = TARGETS[target]
    out = out or ROOT / spec["out"]
    tree = out.parent / "pkg"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    if deps:
        install(ROOT / spec["requirements"], tree)
        if privacy:
            install(ROOT / PRIVACY_REQUIREMENTS, tree)
        trim(tree, keep=("numpy/*",) if privacy else ())  # scipy imports numpy.typing, numpy.f2py, ...
    for dest, src in spec["files"].items():
        copy(ROOT / src, tree / dest)
    for src in sorted((ROOT / "flcore").rglob("*")):
        if src.is_file() and "__pycache__" not in src.parts:
            copy(src, tree / src.relative_to(ROOT))
    compile_tree(tree, ours={"flcore"} | {Path(dest).parts[0] for dest in spec["files"]})
    strip(tree)
    write_zip(tree, out)
    return out


def install(requirements: Path, tree: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
            "--target",
            str(tree),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            "3.11",
            *platforms,
        ],
        check=True,
    )


def trim(tree: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete what matches TRIM, except the globs in ``keep``."""
    for path in sorted(tree.rglob("*"), reverse=True):  # children before their folders
        rel = path.relative_to(tree).as_posix()
        kept = any(fnmatch.fnmatch(rel, glob) or fnmatch.fnmatch(rel, glob + "/*") for glob in keep)
        if path.exists() and not kept and any(fnmatch.fnmatch(rel, glob) for glob in TRIM):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for cache in list(tree.rglob("__pycache__")):
        shutil.rmtree(cache)


def copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def compile_tree(tree: Path, ours: set[str]) -> None:
    """Ours (top-level names in ``ours``): source plus hash-checked bytecode in __pycache__.
    Dependencies: bytecode where the source was, and no source."""
    for src in sorted(tree.rglob("*.py")):
        rel = src.relative_to(tree)
        mine = rel.parts[0] in ours
        py_compile.compile(
            str(src),
            cfile=None if mine else str(src.with_suffix(".pyc")),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            dfile=rel.as_posix(),
        )
        if not mine:
            src.unlink()


def strip(tree: Path) -> None:
    exe = shutil.which("strip")
    if exe is None:
        print("strip (binutils) not found: extension modules keep their symbol tables", file=sys.stderr)
        return
    for lib in sorted(tree.rglob("*.so")):
        if not any(part.endswith(".libs") for part in lib.relative_to(tree).parts):
            subprocess.run([exe, "--strip-unneeded", str(lib)], check=True)


def write_zip(tree: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(tree).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())


def unzipped_bytes(zip_path: Path) -> int:
    with zipfile.ZipFile(zip_path) as zf:
        return sum(i.file_size for i in zf.infolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--out", type=Path, help="where to write the zip (default: build/<target>/...)")
    parser.add_argument("--no-deps", action="store_true", help="only our code (a runtime image that has the rest)")
    parser.add_argument(
        "--privacy", action="store_true", help="add the accountant DP jobs need (dp-accounting, with scipy)"
    )
    args = parser.parse_args()
    out = build(args.target, args.out, deps=not args.no_deps, privacy=args.privacy)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MB, {unzipped_bytes(out) / 2**20:.1f} MB unzipped")


if __name__ == "__main__":
    main()
