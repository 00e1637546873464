"""Training-side additions to the OpenMMLab engines (optimizer constructors, hooks).

Modules here register themselves with a framework's registry when imported; configs list them
in ``custom_imports`` (e.g. ``benchmarks.engine.layer_decay``).
"""
