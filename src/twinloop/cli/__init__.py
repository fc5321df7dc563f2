"""The command-line interface (``twinloop``)."""
