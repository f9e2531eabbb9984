"""HTTP push endpoint for devices and gateways that send JSON readings: see README.md in this folder."""
