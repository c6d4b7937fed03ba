"""One module per stage: the loop over classes or images that ties models, core and formats
together (batching, progress, resume, sharding). This is the Python API."""
