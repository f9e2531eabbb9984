"""Siemens S7 source (PLCs over ISO-on-TCP) with python-snap7."""
