"""CoAP (RFC 7252) with observe (RFC 7641): NB-IoT sensors observed, or pushing to our server."""
