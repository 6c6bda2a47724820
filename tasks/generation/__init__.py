"""Generation: a question and its retrieved chunks become a cited answer.

- :mod:`~tasks.generation.prompts`: prompt templates and the MLflow prompt registry.
- :mod:`~tasks.generation.answers`: the :class:`Answer` every backend returns, and the protocol.
- :mod:`~tasks.generation.extractive`: the model-free backend (retrieved sentences, cited).
- :mod:`~tasks.generation.chat`: any OpenAI-compatible chat-completions endpoint.
- :mod:`~tasks.generation.backends`: the backend the settings choose.
"""
