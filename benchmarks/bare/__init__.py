"""Bare baseline apps for benchmarks/app_cpu.py: the least a framework + driver costs."""
