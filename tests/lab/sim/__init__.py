"""Tests of the sim lab backend (toolkit/lab/sim)."""
