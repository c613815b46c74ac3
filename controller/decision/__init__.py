"""The decision: the only code that builds, seeds, advances and closes the window book.

- :mod:`.rule`: window statistics and Welch's test (pure);
- :mod:`.windows`: which window a reading belongs to, which windows are due (pure);
- :mod:`.restore`: the state to resume from after a restart (pure);
- :mod:`.loop`: the thin shell that decides each window at its deadline and issues its command.

The writer only sees the book as a window sink (``controller.storage.writer.WindowSink``).
"""
