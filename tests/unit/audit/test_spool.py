"""The forwarding spool: at-least-once, in order, across restarts and compaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovereign_operator.audit import forwarding
from sovereign_operator.audit.forwarding import Spool

pytestmark = pytest.mark.unit


def lines(*numbers: int) -> list[bytes]:
    return [b'{"seq":%d}\n' % n for n in numbers]


def drain(spool: Spool, max_bytes: int = 1 << 20) -> list[bytes]:
    delivered: list[bytes] = []
    while True:
        batch, end = spool.read(max_bytes)
        if not batch:
            return delivered
        delivered += batch
        spool.commit(end, len(batch))


def test_records_come_out_in_order_and_the_drained_spool_is_emptied(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "syslog")
    spool.append(lines(0, 1))
    spool.append(lines(2))
    assert spool.pending == 3
    assert drain(spool, max_bytes=10) == lines(0, 1, 2)
    assert spool.pending == 0
    assert (tmp_path / "spool-syslog.jsonl").stat().st_size == 0


def test_a_restart_resumes_after_the_last_delivered_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "http")
    spool.append(lines(0, 1, 2, 3))
    batch, end = spool.read(1)  # one line's worth
    spool.commit(end, len(batch))
    spool.close()
    reopened = Spool(tmp_path, "http")
    assert reopened.pending == 4 - len(batch)
    assert batch + drain(reopened) == lines(0, 1, 2, 3)


def test_a_torn_append_is_cut_back_to_whole_lines(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "stdout")
    spool.append(lines(0))
    spool.close()
    with (tmp_path / "spool-stdout.jsonl").open("ab") as handle:
        handle.write(b'{"seq":1')  # a crash mid-append
    reopened = Spool(tmp_path, "stdout")
    assert drain(reopened) == lines(0)


def test_compaction_under_steady_load_keeps_every_undelivered_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forwarding, "_COMPACT_BYTES", 40)
    spool = Spool(tmp_path, "syslog")
    delivered: list[bytes] = []
    for n in range(0, 30, 3):
        spool.append(lines(n, n + 1))
        batch, end = spool.read(1 << 20)
        spool.append(lines(n + 2))  # arrives while the batch is in flight: never fully drained
        delivered += batch
        spool.commit(end, len(batch))
        assert (tmp_path / "spool-syslog.jsonl").stat().st_size < 200
    spool.close()
    assert delivered + drain(Spool(tmp_path, "syslog")) == lines(*range(30))


def test_a_cursor_of_a_replaced_file_reads_as_the_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "http")
    spool.append(lines(0, 1))
    batch, end = spool.read(1)
    spool.commit(end, len(batch))
    spool.close()
    # A crash right after compaction replaced the file, before the cursor was reset.
    path = tmp_path / "spool-http.jsonl"
    remaining = path.read_bytes()[end:]
    replacement = tmp_path / "new"
    replacement.write_bytes(remaining)
    replacement.replace(path)
    assert drain(Spool(tmp_path, "http")) == lines(1)
