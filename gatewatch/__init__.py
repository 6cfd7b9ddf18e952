"""The `gatewatch` command line: enrol, identify, models, analyse video, serve."""
