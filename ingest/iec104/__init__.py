"""IEC 60870-5-104 source (substations, RTUs) over c104."""
