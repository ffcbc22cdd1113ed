"""ibflow api: FastAPI REST + WebSocket for people and programs."""
