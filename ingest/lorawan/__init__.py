"""LoRaWAN devices through ChirpStack v4's MQTT integration."""
