"""The command line: one module per command (``eegsine <command>``, ``eegsine-export``, ``eegsine-bench``,
``eegsine-verify``).

The only package that may import every layer; nothing here imports torch at module level, so ``--help`` and
the runtime-only install work.
"""
