"""Kafka consumer (city message buses): offsets committed only after the landing commit."""
