"""TensorFlow here only prepares tfds data and writes TensorBoard events."""

import types


def import_tensorflow() -> types.ModuleType:
  """Imports TensorFlow with every GPU and TPU hidden from it.

  Called before TF initialises its devices, so JAX keeps the accelerators
  even where a GPU build of TensorFlow is installed.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      pass  # already initialised, or no such device type
  return tf
