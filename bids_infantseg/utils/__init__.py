"""Small utilities below every other layer: atomic file writes and run locks."""
