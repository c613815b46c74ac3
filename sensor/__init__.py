"""The sensor service: creates readings on a steady schedule and streams them to the controller.

Run it with ``python -m sensor``; the pure parts (schedule, profiles, pending
buffer) live in their own modules so tests drive them without a clock or a socket.
"""
