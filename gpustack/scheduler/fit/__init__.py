"""One module per kind of engine requirement: which candidates exist, in order of preference."""
