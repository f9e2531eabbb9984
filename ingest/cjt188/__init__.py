"""CJ/T 188-2018 water, gas and heat meters polled over a serial server or a serial port."""
