"""Controllers: loops that move the stored state toward what users asked for."""
