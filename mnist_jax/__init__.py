"""mnist-jax: digit classification in JAX/Flax, and which test images the model gets wrong."""
