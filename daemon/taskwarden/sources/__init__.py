"""Task sources: one adapter per vendor API, all behind the `Source` protocol."""
