"""Heron's ``Heron.communication`` package: its source com and source worker are heron_remote's."""
