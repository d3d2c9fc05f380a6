"""Image sets from disk (with a built-in fallback) and noise models."""
