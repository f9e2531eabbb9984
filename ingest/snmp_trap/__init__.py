"""SNMP notification receiver: v1/v2c traps by community, v3 traps and informs by USM user."""
