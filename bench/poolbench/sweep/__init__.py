"""Runs sweeps: owns every process it starts and writes the results directory."""
