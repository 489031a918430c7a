"""The commands: one module per `voxadapt` subcommand, each `stage(config) -> result`.

A stage composes the library (`voxadapt.*` outside this folder) and never imports another
stage; only `demo` (and `cli`) compose stages. tests/test_architecture.py keeps this true.
"""
