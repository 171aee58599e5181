"""Tests of the docker lab backend (toolkit/lab/docker): engine, offline images, compose, DockerLab."""
