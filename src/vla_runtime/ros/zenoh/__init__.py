"""The embedded zenoh backend: rmw_zenoh's wire format from a pip install (DESIGN §2)."""
