"""Tests of bench.analysis."""
