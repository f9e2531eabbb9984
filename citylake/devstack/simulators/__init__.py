"""Simulated devices that speak the new protocols (issue 15), one module each."""
