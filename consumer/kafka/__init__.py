"""The Kafka client boundary: the group consumer and its membership, refusals, topics, replay."""
