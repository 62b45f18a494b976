"""The viewer: a FastAPI server over interactive sessions, and its single-page front end."""
