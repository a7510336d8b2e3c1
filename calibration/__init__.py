"""Low-temperature compensation: pure numpy/OpenCV math and the tools that fit it (no asyncio, no I/O)."""
