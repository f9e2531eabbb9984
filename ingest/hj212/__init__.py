"""HJ 212-2017 TCP server for environmental monitoring stations: see README.md in this folder."""
