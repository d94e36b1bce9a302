"""Policy backends; each module registers itself in `vla_runtime.policy.registry`."""
