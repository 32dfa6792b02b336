"""The one exception type that scripts turn into a one-line message."""


class UserError(Exception):
  """Bad input from the user: a file, a flag or a config value.

  Scripts print the message on one line and exit non-zero, with no traceback.
  The message names the file or flag and says what is wrong with it.
  """
