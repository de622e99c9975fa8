"""Operations: daemon wiring, signals and reload, control socket, metrics and health, logging."""
