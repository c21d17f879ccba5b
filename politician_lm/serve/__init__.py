"""``politician-lm serve``: every persona behind one OpenAI-compatible endpoint, one base model in memory.

* ``personas.py``: which personas to serve (registry entries or ``NAME=PATH`` adapters), checked before loading.
* ``engine.py``: loads the base once with every persona's adapters, batches requests per persona on one thread.
* ``protocol.py``: the OpenAI wire shapes (pydantic request, completion, chunk, model list, error) and the
  system-message policy.
* ``routes.py``: the routes (``/v1/chat/completions``, ``/v1/models``, ``/health``, ``/ready``, the chat page) as an
  ``APIRouter`` reaching ``ServerState`` through a dependency, and the API key check.
* ``streaming.py``: tokens to a whole answer or an SSE stream (one chunk writer), cancelled on disconnect.
* ``api.py``: the FastAPI app itself (``create_app``: lifespan, error handlers, the router).
* the ``serve`` verb itself (uvicorn, bound to 127.0.0.1 by default) is ``politician_lm.commands.serve``.
"""
