"""The ``consentgate`` command line."""
