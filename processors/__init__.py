"""The processing core (plain Python, no Faust types) and the Faust app wiring it to topics."""
