"""The method as pure tensor functions: no files, no model downloads, shapes in docstrings,
defaults in frozen dataclasses that are also written into metadata. Imports nothing else of
ovdiff_cli."""
