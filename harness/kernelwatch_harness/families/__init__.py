"""Kernel families: one module per family (kernelwatch_harness.family says what each declares)."""
