"""Tests of the sample app."""
