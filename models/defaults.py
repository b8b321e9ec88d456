"""Model defaults that the CLI and the pipeline read without importing Keras."""

IMAGE_SIZE = 32                 # S: images are S x S; small enough for the CNN on a CPU
