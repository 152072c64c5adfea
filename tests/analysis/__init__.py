"""Tests of poolbench.analysis."""
