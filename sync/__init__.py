"""Edge → region sync: an edge ships its lake to its region over HTTP.

Floor 2: imports lake/, schemas/ and the config models; imported by the CLI.
"""
