"""Decode an llcr ``gpu.samples`` block without llcr: fastavro, the schema file, numpy.

What a downstream consumer writes from docs/topics.md; the peer jobs use it (they run in
their own virtualenvs, without llcr installed).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import numpy as np

HEADER = 10  # single-object framing: C3 01 + 8-byte schema fingerprint
SAMPLE_DTYPE = np.dtype("<u2,<i8,<i8,<i8,<i8,u1,u1,<u2,<f8,<f8,<f8,<i8,<f8")


class Blocks:
    def __init__(self, schema_file: str) -> None:
        self.schema = fastavro.parse_schema(json.loads(Path(schema_file).read_text("utf-8")))
        self.messages = 0

    def samples(self, value: bytes) -> list[dict[str, Any]]:
        """One message -> one dict per sample: zone, gpu, start_ms, end_ms, energy_mj."""
        buf = io.BytesIO(value)
        buf.seek(HEADER)
        block = fastavro.schemaless_reader(buf, self.schema, None)
        self.messages += 1
        rows = np.frombuffer(block["sample_rows"], dtype=SAMPLE_DTYPE)
        uuids = [g["gpu_uuid"] for g in block["gpus"]]
        zone = block["zone"]
        return [
            {"zone": zone, "gpu": uuids[g], "start_ms": s, "end_ms": e, "energy_mj": mj}
            for g, s, e, mj in zip(
                rows["f0"].tolist(),
                rows["f2"].tolist(),
                rows["f3"].tolist(),
                rows["f4"].tolist(),
                strict=True,
            )
        ]
