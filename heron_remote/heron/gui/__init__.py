"""Heron's ``Heron.gui`` package, as far as nodes use it: their visualisation."""
