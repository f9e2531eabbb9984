"""NMEA 0183 talker client (GPS on boats, drones, mobile stations): see README.md in this folder."""
