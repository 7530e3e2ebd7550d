"""Removal actions: obligations, on-site capture, permanent credits and the ledger."""
