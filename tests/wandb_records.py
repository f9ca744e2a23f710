"""Read what the real wandb client wrote offline (run-<id>.wandb).

The client has no public reader for offline runs, so the test reads the file's documented
framing itself: a 7-byte header (":W&B", magic, version), then LevelDB-log records in 32 KiB
blocks, each a serialized `wandb.proto.wandb_internal_pb2.Record`.
"""

import json
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    pos, payloads, partial = 7, [], b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer padding
            pos += BLOCK - pos % BLOCK
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            partial = chunk
        elif kind == MIDDLE:
            partial += chunk
        elif kind == LAST:
            payloads.append(partial + chunk)
    return [wandb_internal_pb2.Record.FromString(p) for p in payloads]


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def history(records) -> list[dict]:
    return [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]


def summary(records) -> dict:
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            out.update(_items(r.summary.update))
    return out


def run_info(records):
    return next(r.run for r in records if r.WhichOneof("record_type") == "run")
