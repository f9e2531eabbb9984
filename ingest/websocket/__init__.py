"""WebSocket push endpoint for gateways and apps sending JSON readings: see README.md in this folder."""
