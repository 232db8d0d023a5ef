"""The OpenAI-compatible local server (``quantdesk serve`` and the Server page).

A FastAPI app on uvicorn that answers in OpenAI's shapes and never loads a model the machine cannot
hold: every load is planned by the core :class:`~app.core.planning.Planner` against what the
already loaded models leave free (:mod:`app.server.models`), one engine process per model.

- :mod:`app.server.config` -- :class:`ServerOptions` and the safe-default checks;
- :mod:`app.server.errors` -- OpenAI's error JSON and the one ``ErrorKind`` -> HTTP status table;
- :mod:`app.server.models` -- the model pool: planning, LRU eviction, idle TTL, per-model queues;
- :mod:`app.server.schemas` -- request parsing and OpenAI response shapes;
- :mod:`app.server.app` -- the routes; :mod:`app.server.runner` -- uvicorn in a thread or in the
  main thread.

It imports only the core (never Qt), so the GUI and the CLI both drive it.
"""

from app.server.config import ServerConfigError, ServerOptions

__all__ = ["ServerConfigError", "ServerOptions"]
