"""Mutating commands (purge, restore, control, connections kill): a pure plan, then the I/O
that carries it out. The guard (`guard.py`) is shared: plan -> show -> confirm -> act ->
re-read -> audit."""
