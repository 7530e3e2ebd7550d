"""The grid-intensity feeder: providers, CSV imports, validation, revisions, publishing."""
