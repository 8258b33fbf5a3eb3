"""The ``sklearn-imgpair`` command line: argument parsing and the commands."""
