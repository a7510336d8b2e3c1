"""The tests' mosquitto is the product's (`edge_runtime.broker`): a missing binary fails loudly, never skips."""

from edge_runtime.broker import Mosquitto, MosquittoError, find_mosquitto

__all__ = ["Mosquitto", "MosquittoError", "find_mosquitto"]
