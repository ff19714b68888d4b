"""Bring-your-own-model example for `edgefuse export package.module:factory`."""
