"""llcr stream side: faust processors, removal actions, the ClickHouse sink and the
embedded single-machine runtime. Depends on `schemas`; never imports `agents`."""
