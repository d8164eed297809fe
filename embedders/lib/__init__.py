"""Helpers the model modules share: audio reading, resampling, weight files, MTF text,
convolution kernels and the torch networks. Discovery never imports these; a model imports what
it needs (the torch ones inside its ``_load``)."""
