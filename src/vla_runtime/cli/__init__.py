"""The `vla-runtime` command."""
