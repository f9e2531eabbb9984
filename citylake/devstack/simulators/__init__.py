"""Simulated devices speaking real protocols, each on its protocol library's own server."""
