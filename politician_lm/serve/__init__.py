"""``politician-lm serve``: every persona behind one OpenAI-compatible endpoint, one base model in memory.

* ``personas.py``: which personas to serve (registry entries or ``NAME=PATH`` adapters), checked before loading.
* ``engine.py``: loads the base once with every persona's adapters, batches requests per persona on one thread.
* ``api.py``: the FastAPI app (``/v1/chat/completions``, ``/v1/models``, ``/health``, ``/ready``, the chat page).
* the ``serve`` verb itself (uvicorn, bound to 127.0.0.1 by default) is ``politician_lm.commands.serve``.
"""
