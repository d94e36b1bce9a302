"""Thin node adapters, one module per executable (DESIGN §9)."""
