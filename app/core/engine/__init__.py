"""The inference engine: one child process per loaded model, driven by messages.

The parent (GUI or CLI) never imports llama_cpp: start-up stays fast, and when llama.cpp aborts on a
failed assertion or the OS kills it for memory, only the child dies and the caller gets a clear
:class:`~app.core.engine.client.EngineCrashed`.
"""

from app.core.engine.client import Engine, EngineCrashed, EngineError
from app.core.engine.protocol import GenerationStats, LoadedInfo, Sampling

__all__ = ["Engine", "EngineCrashed", "EngineError", "GenerationStats", "LoadedInfo", "Sampling"]
