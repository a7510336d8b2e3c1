"""edge-runtime: adapters -> tensor pipeline -> compensation -> ONNX -> results -> durable outbox -> sinks."""

__version__ = "0.1.0"
__all__ = ["__version__"]
