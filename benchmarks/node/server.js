// The anchor of the fan-out benchmark: @fanoutio/eventstream 2.0.1, the library
// this project ports, on Express, serving the harness's three routes (see
// benchmarks/apps.py): GET /events, POST /publish?count=&size=&rate=, GET /stats.
//
//     node benchmarks/node/server.js PORT
import express from 'express';
import { EventStream } from '@fanoutio/eventstream';

const CHANNEL = 'bench';
const port = Number(process.argv[2]);
const eventStream = new EventStream();
const handler = eventStream(CHANNEL);
let subscribers = 0;

function payload(seq, size) {
  // The same clock as Python's time.monotonic_ns() (CLOCK_MONOTONIC).
  const head = `${seq} ${process.hrtime.bigint()} `;
  return head + 'x'.repeat(Math.max(0, size - head.length));
}

const app = express();
app.get('/events', (req, res) => {
  subscribers += 1;
  res.on('close', () => {
    subscribers -= 1;
  });
  handler(req, res);
});
app.post('/publish', async (req, res) => {
  const count = Number(req.query.count);
  const size = Number(req.query.size);
  const rate = Number(req.query.rate ?? 0);
  const started = performance.now();
  for (let seq = 0; seq < count; seq += 1) {
    if (rate > 0) {
      const delay = started + (seq * 1000) / rate - performance.now();
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    }
    await eventStream.publishEvent(CHANNEL, { event: 'message', data: payload(seq, size) });
  }
  res.json({ published: count, seconds: (performance.now() - started) / 1000 });
});
app.get('/stats', (req, res) => {
  res.json({ subscribers, traced: {} });
});
app.listen(port, '127.0.0.1', 4096);
