"""Pure decisions with no I/O: the point codec, command plans, read plans, device states."""
