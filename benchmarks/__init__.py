"""airspeed velocity (asv) benchmarks: ``asv run`` (history over commits), ``asv check``."""
