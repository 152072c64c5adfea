"""The locustfiles poolbench ships: one workload per file (shipped in the wheel as package data)."""
