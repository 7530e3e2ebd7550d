"""What the v2 columnar block costs and saves against the v1 batch (issue 17, docs/benchmarks.md).

Per message size (8 and 128 samples, 2 jobs a sample, as `llcr agent gpu` builds them):
bytes on the wire, and decode time per sample three ways: the v1 batch decoded by fastavro
(today's path), the block decoded and converted to the v1 shape (what every llcr reader
does with a block now), and the block decoded to numpy columns (what a columnar reader
gets: one Avro record plus one ``frombuffer`` per rows field). Run from the repo root:

    PYTHONPATH=. python bench/blocks.py
"""

from __future__ import annotations

import time
from typing import Any

import numpy

from agents.gpu.agent import GpuAgent, HostIdentity
from agents.gpu.model import JobLabels
from agents.gpu.sources import SimSource
from schemas.blocks import SAMPLE_DTYPE, SHARE_DTYPE, to_block
from schemas.codec import Codec

codec = Codec()
SAMPLES = numpy.dtype(SAMPLE_DTYPE)  # parsed once: parsing the string costs ~10 µs a call
SHARES = numpy.dtype(SHARE_DTYPE)


def batches(per_message: int, gpus: int = 8, count: int = 200) -> list[Any]:
    sim = SimSource(gpus=gpus, seed=1, host="bench")
    agent = GpuAgent(
        HostIdentity("bench", "bench", "fra-1", "DE", "sim"),
        sim,
        lambda pid: JobLabels(f"job-{pid % 2}", "acme"),
    )
    out, tick = [], 0
    t0 = 1_700_000_000_000
    while len(out) < count:
        agent.sample(t0 + tick * 1000)
        tick += 1
        if tick % max(1, per_message // gpus) == 0:
            batch = agent.take_batch(t0 + tick * 1000)
            if batch:
                out.append(batch)
    return out


def per_sample_us(messages: list[bytes], decode: Any, samples: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for message in messages:
            decode(message)
        best = min(best, time.perf_counter() - start)
    return best / samples * 1e6


def columns(message: bytes) -> Any:
    block = codec.decode("gpu_sample_block", message)
    return (
        numpy.frombuffer(block["sample_rows"], dtype=SAMPLES),
        numpy.frombuffer(block["share_rows"], dtype=SHARES),
    )


def main() -> None:
    print(
        f"{'samples/msg':>11} {'v1 bytes':>9} {'v2 bytes':>9} {'v1 µs/s':>8} "
        f"{'v2→v1 µs/s':>11} {'v2 cols µs/s':>13}"
    )
    for per_message in (8, 128):
        found = batches(per_message)
        samples = sum(len(b["samples"]) for b in found)
        v1 = [codec.encode("gpu_sample_batch", b) for b in found]
        v2 = [codec.encode("gpu_sample_block", to_block(b)) for b in found]
        assert all(codec.decode("gpu_sample_batch", m) == b for m, b in zip(v2, found, strict=True))
        print(
            f"{samples / len(found):11.0f} {sum(map(len, v1)) / len(v1):9.0f} "
            f"{sum(map(len, v2)) / len(v2):9.0f} "
            f"{per_sample_us(v1, lambda m: codec.decode('gpu_sample_batch', m), samples):8.2f} "
            f"{per_sample_us(v2, lambda m: codec.decode('gpu_sample_batch', m), samples):11.2f} "
            f"{per_sample_us(v2, columns, samples):13.3f}"
        )


if __name__ == "__main__":
    main()
