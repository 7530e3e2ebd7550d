"""llcr edge publishers: the GPU agent and the grid-intensity feeder.

Depends on `schemas` only. Never imports faust, chDB or clickhouse-connect, so that
`pip install llcr[agent]` stays small on a GPU host.
"""
