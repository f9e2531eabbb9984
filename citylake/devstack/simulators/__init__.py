"""Simulated devices per protocol, behind `citylake simulate <protocol>`."""
