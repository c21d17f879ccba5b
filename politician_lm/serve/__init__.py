"""``politician-lm serve``: every persona behind one OpenAI-compatible endpoint, one base model in memory.

* ``personas.py``: which personas to serve (registry entries or ``NAME=PATH`` adapters), checked before loading.
* ``served.py``: the personas on the one model, each ONE adapter (a weighted mix folded by the exact ``cat``
  combination), added and removed at run time.
* ``engine.py``: the request queue and the one thread that runs the model, one decoding step at a time.
* ``scheduler.py``: the running batch (one left-padded KV cache): requests join at the next step, finished rows
  leave at once, every persona in one forward pass (PEFT's per-row ``adapter_names``).
* ``sampling.py``: each row's next token by its own settings and its own seeded generator.
* ``text.py``: token ids to the text a client sees (reply label stripped, cut before a stop string).
* ``protocol.py``: the OpenAI wire shapes (pydantic request, completion, chunk, model list, error), the fields
  refused as unsupported, and the system-message policy.
* ``routes.py``: the routes (``/v1/chat/completions``, ``/v1/models``, ``/health``, ``/ready``, the chat page) as an
  ``APIRouter`` reaching ``ServerState`` through a dependency, and the API key check.
* ``admin.py``: ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (vLLM's names).
* ``streaming.py``: tokens to a whole answer or an SSE stream (one chunk writer), cancelled on disconnect.
* ``api.py``: the FastAPI app itself (``create_app``: lifespan, error handlers, the routers).
* the ``serve`` verb itself (uvicorn, bound to 127.0.0.1 by default) is ``politician_lm.commands.serve``.
"""
