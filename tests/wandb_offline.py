"""Read back what W&B wrote in offline mode: the records of a run's ``.wandb`` file.

wandb 0.31 writes runs through its Go core and ships no Python reader of its transaction log.
The file is LevelDB's log format (records in 32 KiB blocks, each fragment with a 7-byte header
of CRC, length and type) holding ``wandb_internal_pb2.Record`` messages, which wandb's own
protobuf module parses; this reader is only for the tests.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    name: str
    group: str
    job_type: str
    tags: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


def _payloads(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", "not a W&B transaction log"
    position, pending, found = HEADER, b"", []
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == FULL:
            found.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            found.append(pending + chunk)
        else:
            break  # zeros after the last record
    return found


def _key(item: Any) -> str:
    """W&B stores a name with ``/`` as a nested key."""
    return item.key or "/".join(item.nested_key)


def offline_runs(directory: Path) -> list[OfflineRun]:
    """Every offline run under ``directory`` (W&B's ``dir``), oldest first."""
    from wandb.proto import wandb_internal_pb2 as pb

    runs = []
    for log in sorted(directory.glob("wandb/offline-run-*/run-*.wandb")):
        run: OfflineRun | None = None
        for payload in _payloads(log.read_bytes()):
            record = pb.Record.FromString(payload)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = OfflineRun(
                    record.run.display_name,
                    record.run.run_group,
                    record.run.job_type,
                    list(record.run.tags),
                    {i.key: json.loads(i.value_json) for i in record.run.config.update},
                )
            elif run is not None and kind == "history":
                run.history.update({_key(i): json.loads(i.value_json) for i in record.history.item})
            elif run is not None and kind == "summary":
                run.summary.update(
                    {_key(i): json.loads(i.value_json) for i in record.summary.update}
                )
        assert run is not None, f"{log} has no run record"
        for table in log.parent.glob("files/media/table/*.table.json"):
            run.tables[table.name.split("_", 1)[0]] = json.loads(table.read_text())
        runs.append(run)
    return runs
