"""Small shared helpers: atomic file writes, image loading, logging."""
