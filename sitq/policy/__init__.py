"""Policy: pure decisions. Every transition (state), retry timing, error classes, breakers."""
