"""Sources and sinks: Kafka clients, topics, and the JSON-lines edge."""
