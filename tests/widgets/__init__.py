"""Tests of toolkit.widgets: the flowchart, topology, packet and NAT table views."""
