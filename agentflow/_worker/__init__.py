"""Worker extensions: the dead-lettering consumer, signals, bootsteps."""
