"""Lab orchestration: running a head-end and a fleet together (the demo)."""
