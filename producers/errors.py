class KafkaUnavailable(RuntimeError):
    """Kafka did not acknowledge in time. The API answers 503; nothing was promised to the client."""
