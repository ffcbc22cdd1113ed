"""ibflow's message contracts: one coherent catalogue of commands and events."""
