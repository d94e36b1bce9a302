"""i2rt YAM: Damiao DM-J motors over CAN in MIT mode (protocol, bus, arm driver)."""
