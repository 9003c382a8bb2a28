"""HTTP routes, one module per concern; the app factory includes them all."""
