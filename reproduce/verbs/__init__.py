"""One module per family of ``reproduce`` verbs: each verb is a short function
over the sweep, its backends and its store (``reproduce.cli`` maps names to them)."""
