"""Tests of poolbench.report."""
