"""The ``archspace`` command line."""
