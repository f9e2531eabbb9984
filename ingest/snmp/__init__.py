"""SNMP v2c/v3 polling (GET, GETBULK walks) of UPSs, switches, cabinets and signal controllers."""
