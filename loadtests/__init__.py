"""Load and data tools that speak only the public HTTP API, so they fit every topology."""
