"""The ``meshfleet`` command: click parses and delegates, nothing more."""
