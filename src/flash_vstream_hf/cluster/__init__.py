"""Many streams on a Ray cluster: stream hosts own `StreamingSession`s and checkpoint them, a registry places and
recovers them, a Ray Serve gateway is the HTTP front door (runtime.py has the picture); Ray Data builds memories
in batch (batch/). Ray is imported only inside this package, and only where it is used."""
