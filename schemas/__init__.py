"""Avro contracts (``avro/*.avsc``) and their Confluent-wire-format codecs."""
