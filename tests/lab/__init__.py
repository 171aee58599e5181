"""Tests of toolkit.lab: topology, scenarios, NAT behaviours and the sim, netns and docker backends."""
