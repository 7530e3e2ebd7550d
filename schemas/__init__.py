"""llcr contracts: Avro schemas (the source of truth), the codec, the topic catalogue
and the settings every deployable shares.

`schemas` is the shared kernel. `agents` (edge publishers) and `streams` (processors,
actions, sinks) both depend on it; neither imports the other.
"""
