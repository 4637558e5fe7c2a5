"""The wire: how calls and results become bytes (pickle, JSON) and are signed."""
