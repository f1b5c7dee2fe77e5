"""Stream processors: the consent writer, the consent view and the gate."""
