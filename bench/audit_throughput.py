"""Audit throughput: file-sink records per second with fsync batching, the latency a record
adds to a reconcile, and `verify` speed on a large log.

Writes go through the real AuditTrail and FileSink (one write() + fdatasync per batch;
concurrent callers share a flush). Each write scenario records the same typical admission
event (actor, object, a spec diff) and reports records/s and per-record latency; "no
fsync" is the page-cache ceiling for comparison. The verify scenario builds a log of
`--records` records (rotated every 64 MiB, a checkpoint every 1000 records) and times
`verify_files` over all of it.

    .venv/bin/python bench/audit_throughput.py [--records 1000000] [--writes 20000] [--workdir DIR]

Writes bench/results/audit.json and bench/results/audit.md. Run it on the disk the
operator's audit volume will use: fsync cost is the disk's, not Python's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sovereign_operator.audit.canonical import JsonValue
from sovereign_operator.audit.chain import Chain, ChainHead
from sovereign_operator.audit.checkpoint import CheckpointPolicy, CheckpointReason, Signer
from sovereign_operator.audit.diff import spec_diff
from sovereign_operator.audit.record import Action, Actor, ActorKind, AuditEvent, ObjectRef
from sovereign_operator.audit.segments import rotated_segments, segment_path
from sovereign_operator.audit.sinks import FileSink
from sovereign_operator.audit.trail import AuditTrail
from sovereign_operator.audit.verify import verify_files

RESULTS = Path(__file__).resolve().parent / "results"
SIGNER = Signer(Ed25519PrivateKey.generate())
ACTOR = Actor(ActorKind.ADMISSION, "alice@example.org", "6f1c1f3e-0d7a", ("clinical-ai-admins",))
TARGET = ObjectRef("ModelDeployment", "llama3-70b", "clinical-ai", "0a1b2c3d-4e5f", 7)
OLD: dict[str, JsonValue] = {"model": {"source": "pvc://model-store/meta-llama/Llama-3.3-70B", "digest": "sha256:" + "a" * 64},
       "resources": {"gpus": 8}, "scaling": {"minReplicas": 1, "maxReplicas": 4}}  # fmt: skip
NEW: dict[str, JsonValue] = {**OLD, "scaling": {"minReplicas": 2, "maxReplicas": 6}}
CHANGE = spec_diff(OLD, NEW)
SEGMENT_BYTES = 64 << 20


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def write_scenario(
    folder: Path, name: str, total: int, *, writers: int, fsync: bool, coroutines: bool
) -> dict[str, object]:
    """`total` records from `writers` threads (or coroutines), each timing its own calls."""
    path = folder / name / "audit.log"
    trail = AuditTrail(
        file_sink=FileSink(path, fsync=fsync),
        signer=SIGNER,
        checkpoints=CheckpointPolicy(every_records=1000, every_seconds=60),
        rotate_bytes=SEGMENT_BYTES,
    )
    latencies: list[float] = []
    lock = threading.Lock()
    per_writer = total // writers

    def one_thread() -> None:
        mine = []
        for _ in range(per_writer):
            start = time.perf_counter()
            trail.record(ACTOR, Action.UPDATE, TARGET, change=CHANGE, audit_id="a1b2c3")
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    async def one_coroutine() -> None:
        for _ in range(per_writer):
            start = time.perf_counter()
            await trail.arecord(ACTOR, Action.UPDATE, TARGET, change=CHANGE, audit_id="a1b2c3")
            latencies.append(time.perf_counter() - start)

    async def all_coroutines() -> None:
        await asyncio.gather(*(one_coroutine() for _ in range(writers)))

    started = time.perf_counter()
    if coroutines:
        asyncio.run(all_coroutines())
    else:
        threads = [threading.Thread(target=one_thread) for _ in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    elapsed = time.perf_counter() - started
    trail.close()
    records = per_writer * writers
    print(f"{name}: {records / elapsed:,.0f} records/s", file=sys.stderr)
    return {
        "scenario": name,
        "writers": writers,
        "kind": "coroutines" if coroutines else "threads",
        "fsync": fsync,
        "records": records,
        "seconds": elapsed,
        "records_per_second": records / elapsed,
        "latency_p50_ms": percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        "latency_mean_ms": statistics.fmean(latencies) * 1000,
    }


def build_log(folder: Path, records: int) -> tuple[list[Path], float, int]:
    """A log as the trail lays it out, written without fsync: the point is verify speed."""
    path = folder / "verify" / "audit.log"
    path.parent.mkdir(parents=True)
    chain = Chain(ChainHead(), SIGNER)
    policy = CheckpointPolicy(every_records=1000, every_seconds=1e9)
    event = AuditEvent(ACTOR, Action.UPDATE, TARGET, change=CHANGE, audit_id="a1b2c3")
    moment = datetime.now(UTC)
    handle = path.open("wb")
    size = first = 0
    started = time.perf_counter()
    while chain.head.next_seq < records:
        line = chain.append(event, moment).line
        if policy.due(chain.records_since_checkpoint, 0) or size > SEGMENT_BYTES:
            reason = CheckpointReason.ROTATE if size > SEGMENT_BYTES else CheckpointReason.PERIODIC
            line += chain.checkpoint(reason, moment).line
            if reason is CheckpointReason.ROTATE:
                handle.write(line)
                handle.close()
                path.rename(segment_path(path, first))
                handle, size, first = path.open("wb"), 0, chain.head.next_seq
                continue
        handle.write(line)
        size += len(line)
    handle.write(chain.checkpoint(CheckpointReason.SEAL, moment).line)
    handle.close()
    elapsed = time.perf_counter() - started
    files = [*rotated_segments(path), path]
    return files, elapsed, sum(f.stat().st_size for f in files)


def verify_scenario(folder: Path, records: int) -> dict[str, object]:
    print(f"building a log of {records:,} records", file=sys.stderr)
    files, build_seconds, total_bytes = build_log(folder, records)
    keys = {SIGNER.key_id: SIGNER.public_key}
    for file in files:  # verify from the page cache: the question is CPU, not the disk
        file.read_bytes()
    started = time.perf_counter()
    result = verify_files(list(reversed(files)), keys, require_sealed=True)
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"the generated log does not verify: {result.failure}")
    print(f"verify: {result.summary.records / elapsed:,.0f} records/s", file=sys.stderr)
    return {
        "records": result.summary.records,
        "files": len(files),
        "bytes": total_bytes,
        "checkpoints": result.summary.checkpoints,
        "build_seconds": build_seconds,
        "build_records_per_second": result.summary.records / build_seconds,
        "verify_seconds": elapsed,
        "verify_records_per_second": result.summary.records / elapsed,
        "verify_mib_per_second": total_bytes / (1 << 20) / elapsed,
    }


def machine(folder: Path) -> dict[str, object]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    filesystem = "unknown"
    best = ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, kind, *_ = line.split()
        if str(folder.resolve()).startswith(mount) and len(mount) > len(best):
            best, filesystem = mount, kind
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "filesystem": f"{filesystem} at {best}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="size of the verify log")
    parser.add_argument("--writes", type=int, default=20_000, help="records per write scenario")
    parser.add_argument("--workdir", type=Path, default=Path.cwd(), help="on the disk to measure")
    args = parser.parse_args()
    scenarios: list[tuple[str, Callable[[Path], dict[str, object]]]] = [
        ("1 thread, fsync", lambda f: write_scenario(f, "t1", args.writes // 4, writers=1, fsync=True, coroutines=False)),
        ("1 coroutine, fsync (one reconcile at a time)", lambda f: write_scenario(f, "c1", args.writes // 4, writers=1, fsync=True, coroutines=True)),
        ("16 threads, fsync", lambda f: write_scenario(f, "t16", args.writes, writers=16, fsync=True, coroutines=False)),
        ("64 coroutines, fsync", lambda f: write_scenario(f, "c64", args.writes, writers=64, fsync=True, coroutines=True)),
        ("1 thread, no fsync", lambda f: write_scenario(f, "t1-nofsync", args.writes // 4, writers=1, fsync=False, coroutines=False)),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="audit-bench-", dir=args.workdir) as scratch:
        folder = Path(scratch)
        writes = [{"label": label, **run(folder)} for label, run in scenarios]
        verify = verify_scenario(folder, args.records)
        result = {"writes": writes, "verify": verify, "machine": machine(folder)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "audit.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: Mapping[str, object]) -> str:
    writes = result["writes"]
    verify = result["verify"]
    host = result["machine"]
    assert isinstance(writes, list)
    assert isinstance(verify, dict)
    assert isinstance(host, dict)
    rows = "".join(
        f"| {w['label']} | {w['records']:,} | {w['records_per_second']:,.0f} | "
        f"{w['latency_p50_ms']:.2f} | {w['latency_p99_ms']:.2f} |\n"
        for w in writes
    )
    return (
        "# Audit trail throughput\n\n"
        "## File sink (AuditTrail.record / arecord returns once the record is on disk)\n\n"
        "| writers | records | records/s | latency p50 ms | latency p99 ms |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n"
        "Concurrent writers share one fdatasync per batch (group commit), so throughput grows "
        "with concurrency while each caller still waits for its own flush. The one-coroutine "
        "row is the latency an audited action adds to a reconcile.\n\n"
        f"## Verify: {verify['records']:,} records, {verify['files']} files, "
        f"{verify['bytes'] / (1 << 20):,.0f} MiB, {verify['checkpoints']:,} signed checkpoints\n\n"
        "| step | seconds | records/s | MiB/s |\n|---|---|---|---|\n"
        f"| `verify_files` (page cache warm) | {verify['verify_seconds']:.1f} | "
        f"{verify['verify_records_per_second']:,.0f} | {verify['verify_mib_per_second']:.1f} |\n"
        f"| building the log (chain + hashes + signing, no fsync) | {verify['build_seconds']:.1f} | "
        f"{verify['build_records_per_second']:,.0f} | |\n\n"
        f"Machine: {host['cpu']}, {host['cores']} cores, Python {host['python']}, "
        f"files on {host['filesystem']}.\n"
    )


if __name__ == "__main__":
    main()
