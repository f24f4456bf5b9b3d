"""Profile Studio's HTTP API, mounted on the WebUI's FastAPI app under ``lib_profile.API_PREFIX``."""
