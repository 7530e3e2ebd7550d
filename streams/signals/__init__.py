"""Carbon-aware signals: eco tier, follow-the-sun, carbon-weighted routing."""
