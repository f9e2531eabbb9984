"""GB/T 28181-2016 signalling (metadata only): a SIP platform devices register with."""
