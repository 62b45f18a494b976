"""petloop."""
