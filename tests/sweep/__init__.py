"""Tests of poolbench.sweep."""
