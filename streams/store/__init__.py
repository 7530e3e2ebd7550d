"""ClickHouse access: one client factory for chDB and a server, and versioned migrations."""
