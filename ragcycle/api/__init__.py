"""The HTTP face of ragcycle: a FastAPI app serving the live index version with guardrails.

``ragcycle api`` runs it with uvicorn; any ASGI server can run the factory
``ragcycle.api.app:create_app`` (``uvicorn --factory ragcycle.api.app:create_app``).
"""
