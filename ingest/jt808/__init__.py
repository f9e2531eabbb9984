"""JT/T 808 TCP server for vehicle terminals (buses, taxis, sanitation trucks): see README.md."""
