"""Tests of the graded lab exercises (labs/exercises/) and their checks (toolkit.lab.grading)."""
