// Publish one message with confirms and consume it with amqplib; exit non-zero on failure.
// Usage: node amqplib_roundtrip.js AMQP_URL QUEUE BODY
const amqp = require('amqplib');

async function main() {
  const [url, queue, body] = process.argv.slice(2);
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  await channel.assertQueue(queue);
  await new Promise((resolve, reject) => {
    channel.sendToQueue(queue, Buffer.from(body), {}, (err) => (err ? reject(err) : resolve()));
  });

  const received = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no delivery within 10 s')), 10000);
    channel.consume(queue, (message) => {
      clearTimeout(timer);
      channel.ack(message);
      resolve(message.content.toString());
    });
  });
  console.log(received);
  await channel.close();
  await connection.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
