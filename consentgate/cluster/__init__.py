"""The embedded single-node Kafka (KRaft) and Apicurio schema registry."""
