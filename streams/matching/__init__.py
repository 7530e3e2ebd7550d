"""Temporal matching of GPU energy with grid intensity: the pure core and the faust worker."""
