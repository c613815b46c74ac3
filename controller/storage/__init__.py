"""Everything the controller keeps on disk, and the only code that talks SQL.

- :mod:`.database`: opens the database (migrating it), chooses its write backend, and the
  read queries; :mod:`.rows` maps a command to a row and back;
- :mod:`.writer`: the single group-commit writer every write goes through, with
  :mod:`.inserts` (how a group's readings go in) and :mod:`.notices` (per-sensor warnings);
- :mod:`.write_backend`: what the writer asks of a backend; :mod:`.sqlite` and
  :mod:`.postgres` are the two;
- :mod:`.schema`, :mod:`.migrate` and ``migrations/``: the layout and its revisions;
- :mod:`.origin`: the database's identity; :mod:`.retention`: pruning old readings.
"""
