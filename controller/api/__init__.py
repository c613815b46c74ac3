"""The controller's gRPC edge: what clients call, and what is checked before anything is stored.

- :mod:`.telemetry`: ``workcell.v1.Telemetry`` (sensor streams in, handed to the writer);
- :mod:`.validation`: what a reading must be to be stored (pure);
- :mod:`.admission`: how many streams may be open, and for how long;
- :mod:`.history`: ``workcell.v1.History``, with :mod:`.paging` (page sizes, page tokens)
  and :mod:`.status_runs` (consecutive commands of one status as one entry; pure);
- :mod:`.watch`: ``History/Watch``, one watcher's stream and its bounded buffer, with
  :mod:`.watch_events` (the cursor and the events; pure) and :mod:`.command_feed` (the one
  poller of the commands table that every watcher of the node reads);
- :mod:`.sensors`: ``workcell.v1.Sensors`` (the sensor runs this node stored readings of);
- :mod:`.nodes`: ``workcell.v1.Nodes`` (which node leads).

It depends on the storage only through the small protocols its servicers take.
"""
