"""AMQP 0-9-1 consumer (RabbitMQ queues of existing platforms), acknowledging after the landing commit."""
