"""Publish one message with confirms and consume it with pika; exit non-zero on failure.

Usage: pika_roundtrip.py AMQP_URL QUEUE BODY
"""

import sys

import pika


def main() -> int:
    url, queue, body = sys.argv[1], sys.argv[2], sys.argv[3]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue=queue)
    # With confirms on, basic_publish raises if the broker nacks or returns the message.
    channel.basic_publish(exchange="", routing_key=queue, body=body.encode(), mandatory=True)

    for method, _properties, received in channel.consume(queue, inactivity_timeout=10):
        if method is None:
            print("no delivery within 10 s", file=sys.stderr)
            return 1
        channel.basic_ack(method.delivery_tag)
        print(received.decode())
        break
    channel.cancel()
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
