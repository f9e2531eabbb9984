"""BACnet/IP source (building automation: HVAC, lighting) over bacpypes3."""
