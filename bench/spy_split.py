"""Split a py-spy ``raw`` (collapsed stacks) recording of the matching worker into where its
main thread's time went. Start-up (imports) and other threads are counted apart.

    python bench/matching.py ... --py-spy /tmp/worker.txt
    python bench/spy_split.py /tmp/worker.txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# first match wins, checked against the whole stack (outermost frame first)
BUCKETS = (
    ("start-up (imports)", ("_find_and_load",)),
    ("match: decode (fastavro)", ("Matching.match", "Codec._body")),
    ("match: block and header checks", ("Matching.match", "Intake.samples")),
    ("match: ingest over arrays", ("Matching.match", "columnar.py")),
    ("match: changelog writes", ("Matching.match", "Matching.persist")),
    ("match: dead letters", ("Matching.match", "Matching.dead")),
    ("match: other", ("Matching.match",)),
    ("hour lifecycle (records, slices)", ("Matching.lifecycle",)),
    ("prices agent", ("Matching.take_prices",)),
    ("waiting (event loop select)", ("EpollSelector.select",)),
    ("faust, aiokafka, asyncio", ("",)),
)


def split(lines: list[str]) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, number = line.rstrip().rpartition(" ")
        if not stack:
            continue
        n = int(number)
        total += n
        if not stack.startswith("<module> (<string>:1)"):
            counts["other threads"] += n
            continue
        for name, needles in BUCKETS:
            if all(needle in stack for needle in needles):
                counts[name] += n
                break
    return counts, total


def main() -> None:
    counts, total = split(Path(sys.argv[1]).read_text(encoding="utf-8").splitlines())
    main_thread = total - counts["other threads"] - counts["start-up (imports)"]
    print(f"{total} samples; main thread after start-up: {main_thread}")
    for name, _ in BUCKETS[1:]:
        print(f"  {100 * counts[name] / main_thread:5.1f} %  {name}")
    print(f"  (other threads: {counts['other threads']}, start-up: {counts['start-up (imports)']})")


if __name__ == "__main__":
    main()
