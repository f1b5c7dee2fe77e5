"""Operating consentgate: bounded metric labels, metrics endpoints and their registry, ``consentgate top``."""
