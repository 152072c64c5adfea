"""The sample app under test: a FastAPI service rendering production async patterns."""
