"""Cameras at work: reader threads that keep each camera's newest frame and reconnect, and the
loops that drive those frames through the work: gate and door cameras in batched workers (faces),
facade cameras one thread each (throws). What a decision or a throw means is the caller's."""
