"""A GPU load in phases for recording a real trace (needs torch + CUDA; device machine only).

idle -> full bf16 matmul -> ~50% duty cycle -> idle, printing each phase's start time.
"""

from __future__ import annotations

import sys
import time

import torch

PHASES = (("idle", 6.0, 0.0), ("full", 16.0, 1.0), ("half", 12.0, 0.5), ("idle", 10.0, 0.0))


def main() -> None:
    """argv[1] (optional): the duty of every busy phase, e.g. 0.3 for a lighter second job."""
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    for name, seconds, full_duty in PHASES:
        duty = full_duty * scale
        print(f"{time.time():.3f} phase {name} {seconds}s duty {duty}", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if duty <= 0:
                time.sleep(0.1)
                continue
            busy_until = time.monotonic() + 0.1 * duty
            while time.monotonic() < busy_until:
                a @ b
                torch.cuda.synchronize()
            time.sleep(0.1 * (1 - duty))
    print(f"{time.time():.3f} done", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
