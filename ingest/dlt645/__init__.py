"""DL/T 645-2007 electricity meters polled over a serial server or a serial port."""
