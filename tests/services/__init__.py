"""Tests of toolkit.services: STUN, DERP, control and netcheck services and clients."""
