"""Tests of the netns lab backend (root, iproute2, nftables): real namespaces, real kernel NAT."""
