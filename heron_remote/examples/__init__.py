"""Example workers shipped with heron_remote."""

#: The command that runs the synthetic camera worker (the demo's, the benchmark's).
SYNTHETIC_CAMERA = "python -m heron_remote.examples.synthetic_camera"
