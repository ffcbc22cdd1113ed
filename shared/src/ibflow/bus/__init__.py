"""A thin typed layer over nats-py: subjects, provisioning, publish, consume, request/reply."""
