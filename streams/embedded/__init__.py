"""The embedded single-machine runtime: a Tansu broker process and chDB."""
