"""kernelwatch: benchmarks FlashInfer's GPU kernels as a service.

The service's packages live under this one import name (``kernelwatch.core``, ``.api``,
``.worker``, ``.dashboard``, ``.cli``, ``.migrations``); the measurement runner that is installed
into each FlashInfer version's environment is its own distribution, ``kernelwatch_harness``.
"""
