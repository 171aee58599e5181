"""Tests of the teaching notebooks in notebooks/: stored without outputs, executed by nbval."""
