"""Example workers shipped with heron_remote."""
