"""Digest throughput: `sovereign-worker digest` against `sha256sum` over the same files.

Generates safetensors-sized files of random bytes (default 4 x 512 MiB, small enough for CI),
reads them once so both tools hash from the page cache (the question is hashing speed, not
the disk's), then times each tool as a whole process several times, alternating which goes
first, and reports medians and the ratio (sha256sum time / worker time; above 1 means the
worker is faster). It also checks that both tools computed the same sha256 for every file.

    .venv/bin/python bench/digest_throughput.py [--files 4] [--file-mib 512] [--runs 5]

Writes bench/results/digest.json and bench/results/digest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 64 << 20


def generate(folder: Path, files: int, file_mib: int) -> list[Path]:
    paths = []
    for index in range(files):
        path = folder / f"model-{index + 1:05d}-of-{files:05d}.safetensors"
        remaining = file_mib << 20
        with path.open("wb") as handle:
            while remaining:
                count = min(CHUNK, remaining)
                handle.write(os.urandom(count))
                remaining -= count
        paths.append(path)
    return paths


def warm(paths: list[Path]) -> None:
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(CHUNK):
                pass


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def worker_command() -> str:
    found = Path(sys.executable).parent / "sovereign-worker"
    if found.exists():
        return str(found)
    which = shutil.which("sovereign-worker")
    if which is None:
        raise SystemExit("sovereign-worker is not installed; run `make venv` first")
    return which


def same_hashes(sha256sum_out: str, manifest_path: Path) -> bool:
    expected = {}
    for line in sha256sum_out.splitlines():
        digest, name = line.split(maxsplit=1)
        expected[Path(name.lstrip("*")).name] = digest
    manifest = json.loads(manifest_path.read_bytes())
    found = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    return found == expected


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=None, help="passed to `digest --jobs`")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate files")
    args = parser.parse_args()

    worker = worker_command()
    with tempfile.TemporaryDirectory(prefix="digest-bench-", dir=args.workdir) as scratch:
        folder = Path(scratch) / "model"
        folder.mkdir()
        print(f"generating {args.files} x {args.file_mib} MiB in {folder}", file=sys.stderr)
        paths = generate(folder, args.files, args.file_mib)
        warm(paths)
        manifest = Path(scratch) / "manifest.json"
        worker_argv = [worker, "digest", "--output", str(manifest), str(folder)]
        if args.jobs:
            worker_argv[2:2] = ["--jobs", str(args.jobs)]
        sha_argv = ["sha256sum", *map(str, paths)]
        worker_times: list[float] = []
        sha_times: list[float] = []
        agree = True
        for run in range(args.runs):
            order = [(worker_argv, worker_times), (sha_argv, sha_times)]
            for argv, times in order if run % 2 == 0 else reversed(order):
                seconds, output = timed(argv)
                times.append(seconds)
                if argv is sha_argv:
                    agree = agree and same_hashes(output, manifest)
            print(
                f"run {run + 1}: worker {worker_times[-1]:.2f} s, sha256sum {sha_times[-1]:.2f} s",
                file=sys.stderr,
            )

    total_bytes = args.files * (args.file_mib << 20)
    worker_median = statistics.median(worker_times)
    sha_median = statistics.median(sha_times)
    result = {
        "files": args.files,
        "file_mib": args.file_mib,
        "total_bytes": total_bytes,
        "runs": args.runs,
        "jobs": args.jobs or len(os.sched_getaffinity(0)),
        "worker_seconds": worker_times,
        "sha256sum_seconds": sha_times,
        "worker_median_seconds": worker_median,
        "sha256sum_median_seconds": sha_median,
        "worker_mib_per_second": total_bytes / (1 << 20) / worker_median,
        "sha256sum_mib_per_second": total_bytes / (1 << 20) / sha_median,
        "ratio_sha256sum_over_worker": sha_median / worker_median,
        "same_hashes": agree,
        "machine": {
            "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "sha256sum": subprocess.run(
                ["sha256sum", "--version"], check=True, capture_output=True, text=True
            ).stdout.splitlines()[0],
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "digest.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "digest.md").write_text(markdown(result))
    print(markdown(result))
    if not agree:
        raise SystemExit("the worker and sha256sum disagree on a file's sha256")


def markdown(result: dict[str, object]) -> str:
    machine = result["machine"]
    assert isinstance(machine, dict)
    gib = int(result["total_bytes"]) / (1 << 30)  # type: ignore[call-overload]
    return (
        f"# Digest throughput: {result['files']} x {result['file_mib']} MiB ({gib:.1f} GiB), "
        f"median of {result['runs']} runs, page cache warm\n\n"
        "| tool | median s | MiB/s |\n|---|---|---|\n"
        f"| `sovereign-worker digest` ({result['jobs']} threads) | "
        f"{result['worker_median_seconds']:.2f} | {result['worker_mib_per_second']:.0f} |\n"
        f"| `sha256sum` | {result['sha256sum_median_seconds']:.2f} | "
        f"{result['sha256sum_mib_per_second']:.0f} |\n\n"
        f"Ratio sha256sum / worker: **{result['ratio_sha256sum_over_worker']:.2f}x** "
        f"(above 1: the worker is faster). Same sha256 for every file: {result['same_hashes']}.\n\n"
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"{machine['sha256sum']}. Times are whole processes, the worker's Python start-up "
        "included.\n"
    )


if __name__ == "__main__":
    main()
