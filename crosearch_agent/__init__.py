"""CroSearch: a multilingual search agent (runtime library shared by app, eval and training)."""
