"""Modbus adapter (TCP, RTU over TCP, serial RTU): see README.md in this folder."""
