"""The fusion model zoo (torch): layers, encoders, fusion architectures, heads, registry.

Import the submodules directly (`edgefuse.models.zoo`); this package imports nothing heavy.
"""
