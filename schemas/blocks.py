"""The columnar sample block (``llcr.v2.GpuSampleBlock``) and the per-sample batch
(``llcr.v1.GpuSampleBatch``): one carries exactly what the other does.

A block holds a host's GPUs and jobs once each, and its samples and job shares as
fixed-width little-endian rows in two ``bytes`` fields (layout: :data:`SAMPLE_ROW`,
:data:`SHARE_ROW`, docs/topics.md). A reader needs an Avro library and one
``struct.iter_unpack`` or ``numpy.frombuffer`` per field. Pure Python, no numpy: the
agent uses this too.

:func:`to_block` and :func:`from_block` are exact inverses, except that a sample's
flags come back once each, in the schema's symbol order (a flag is a set member; the
batch's list could repeat or reorder them). The codec applies them when a message
written as one is read as the other (``Codec.decode``), so every reader of
``gpu.samples`` reads both while a fleet upgrades its agents.
"""

from __future__ import annotations

import struct
from typing import Any, cast, get_args

from schemas.errors import CodecError
from schemas.records import (
    EnergyMethod,
    GpuSample,
    GpuSampleBatch,
    GpuSampleBlock,
    JobShare,
    SampleFlag,
)

#: gpu u16, seq i64, start_ms i64, end_ms i64, energy_mj i64, energy_method u8,
#: flags u8 (bit i: FLAGS[i]), share_count u16, power_w f64, power_limit_w f64,
#: utilization_pct f64, memory_used_bytes i64, temperature_c f64 (78 bytes)
SAMPLE_ROW = struct.Struct("<HqqqqBBHdddqd")
#: job u16, share f64, energy_mj i64, prompt_tokens i64, generation_tokens i64 (34 bytes)
SHARE_ROW = struct.Struct("<Hdqqq")
#: the same layouts as numpy dtype strings (packed: no alignment padding)
SAMPLE_DTYPE = "<u2,<i8,<i8,<i8,<i8,u1,u1,<u2,<f8,<f8,<f8,<i8,<f8"
SHARE_DTYPE = "<u2,<f8,<i8,<i8,<i8"

FLAGS: tuple[SampleFlag, ...] = get_args(SampleFlag)
METHODS: tuple[EnergyMethod, ...] = get_args(EnergyMethod)
_FLAG_BIT = {flag: 1 << i for i, flag in enumerate(FLAGS)}
_METHOD_CODE = {method: i for i, method in enumerate(METHODS)}
_HEADER = ("batch_id", "agent_id", "batch_seq", "host", "site", "zone", "source")


def to_block(batch: GpuSampleBatch) -> GpuSampleBlock:
    """The block of ``batch`` (the agent's publish format)."""
    gpus: dict[tuple[Any, ...], int] = {}
    jobs: dict[tuple[Any, ...], int] = {}
    sample_rows = bytearray()
    share_rows = bytearray()
    try:
        for sample in batch["samples"]:
            gpu = (
                sample["gpu_uuid"],
                sample["gpu_index"],
                sample["gpu_model"],
                sample.get("mig_instance"),
            )
            flags = 0
            for flag in sample.get("flags", []):
                flags |= _FLAG_BIT[flag]
            shares = sample["jobs"]
            sample_rows += SAMPLE_ROW.pack(
                gpus.setdefault(gpu, len(gpus)),
                sample["seq"],
                sample["start_ms"],
                sample["end_ms"],
                sample["energy_mj"],
                _METHOD_CODE[sample["energy_method"]],
                flags,
                len(shares),
                sample["power_w"],
                sample["power_limit_w"],
                sample["utilization_pct"],
                sample["memory_used_bytes"],
                sample["temperature_c"],
            )
            for share in shares:
                job = (share["job_id"], share["tenant"], share.get("model"), share["sharing"])
                share_rows += SHARE_ROW.pack(
                    jobs.setdefault(job, len(jobs)),
                    share["share"],
                    share["energy_mj"],
                    share.get("prompt_tokens", 0),
                    share.get("generation_tokens", 0),
                )
    except (struct.error, KeyError, TypeError) as exc:
        raise CodecError("invalid_record", f"gpu_sample_block: cannot pack: {exc}") from exc
    block: dict[str, Any] = {name: batch[name] for name in _HEADER}  # type: ignore[literal-required]
    block["published_at_ms"] = batch["published_at_ms"]
    block["gpus"] = [
        {"gpu_uuid": u, "gpu_index": i, "gpu_model": m, "mig_instance": mig}
        for u, i, m, mig in gpus
    ]
    block["jobs"] = [
        {"job_id": j, "tenant": t, "model": m, "sharing": sharing} for j, t, m, sharing in jobs
    ]
    block["sample_rows"] = bytes(sample_rows)
    block["share_rows"] = bytes(share_rows)
    return cast(GpuSampleBlock, block)


def _corrupt(message: str) -> CodecError:
    return CodecError("corrupt", f"gpu_sample_block: {message}")


def from_block(block: GpuSampleBlock) -> GpuSampleBatch:
    """The per-sample batch a block carries. A block whose rows do not fit its own
    dictionaries and lengths is corrupt (``CodecError``), never partly read."""
    rows, share_bytes = block["sample_rows"], block["share_rows"]
    if len(rows) % SAMPLE_ROW.size or len(share_bytes) % SHARE_ROW.size:
        raise _corrupt(
            f"row bytes {len(rows)}/{len(share_bytes)} are not whole "
            f"{SAMPLE_ROW.size}/{SHARE_ROW.size}-byte rows"
        )
    gpus, jobs = block["gpus"], block["jobs"]
    share_rows = SHARE_ROW.iter_unpack(share_bytes)
    samples: list[GpuSample] = []
    for number, row in enumerate(SAMPLE_ROW.iter_unpack(rows)):
        gpu, seq, start, end, energy, method, flags, count, power, limit, util, memory, temp = row
        if gpu >= len(gpus) or method >= len(METHODS) or flags >> len(FLAGS):
            raise _corrupt(
                f"sample row {number}: gpu {gpu} of {len(gpus)}, method {method}, flags {flags}"
            )
        shares: list[JobShare] = []
        for _ in range(count):
            share_row = next(share_rows, None)
            if share_row is None:
                raise _corrupt(f"sample row {number} counts more share rows than there are")
            job, share, job_energy, prompt, generation = share_row
            if job >= len(jobs):
                raise _corrupt(f"sample row {number}: job {job} of {len(jobs)}")
            ref = jobs[job]
            shares.append(
                {
                    "job_id": ref["job_id"],
                    "tenant": ref["tenant"],
                    "model": ref.get("model"),
                    "share": share,
                    "energy_mj": job_energy,
                    "sharing": ref["sharing"],
                    "prompt_tokens": prompt,
                    "generation_tokens": generation,
                }
            )
        ref_gpu = gpus[gpu]
        samples.append(
            {
                "gpu_uuid": ref_gpu["gpu_uuid"],
                "gpu_index": ref_gpu["gpu_index"],
                "gpu_model": ref_gpu["gpu_model"],
                "mig_instance": ref_gpu.get("mig_instance"),
                "seq": seq,
                "start_ms": start,
                "end_ms": end,
                "energy_mj": energy,
                "energy_method": METHODS[method],
                "flags": [flag for i, flag in enumerate(FLAGS) if flags >> i & 1],
                "power_w": power,
                "power_limit_w": limit,
                "utilization_pct": util,
                "memory_used_bytes": memory,
                "temperature_c": temp,
                "jobs": shares,
            }
        )
    if next(share_rows, None) is not None:
        raise _corrupt("share rows left over after the last sample's share_count")
    batch: dict[str, Any] = {name: block[name] for name in _HEADER}  # type: ignore[literal-required]
    batch["published_at_ms"] = block["published_at_ms"]
    batch["samples"] = samples
    return cast(GpuSampleBatch, batch)
