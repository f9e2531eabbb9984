"""Simulated devices, one module per protocol, behind ``citylake simulate <protocol>``."""
