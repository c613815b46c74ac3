"""The controller's gRPC edge: what clients call, and what is checked before anything is stored.

- :mod:`.telemetry`: ``workcell.v1.Telemetry`` (sensor streams in, handed to the writer);
- :mod:`.validation`: what a reading must be to be stored (pure);
- :mod:`.admission`: how many streams may be open, and for how long;
- :mod:`.history`: ``workcell.v1.History``, with :mod:`.paging` (page sizes, page tokens)
  and :mod:`.status_runs` (consecutive commands of one status as one entry; pure).

It depends on the storage only through the small protocols its servicers take.
"""
