"""The round engine: the job's lifecycle, closing rounds, the round modes, picking, the lease, rules."""
