"""Renders an Analysis: the HTML report, its charts and per-run time series."""
