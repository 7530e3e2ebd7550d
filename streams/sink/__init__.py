"""The ClickHouse sink: every topic into its table, once."""
