"""The tests' mosquitto is the product's (`edge_runtime.tools.broker`): a missing binary fails loudly, never skips."""

from edge_runtime.tools.broker import Mosquitto, MosquittoError, find_mosquitto

__all__ = ["Mosquitto", "MosquittoError", "find_mosquitto"]
