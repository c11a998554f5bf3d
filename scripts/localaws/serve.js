// Starts kinesalite (Kinesis) and/or dynalite (DynamoDB) on 127.0.0.1 only.
// Usage: node serve.js kinesis|dynamodb PORT [dataDir]
// Prints "ready <service> 127.0.0.1:<port>" once listening. Without dataDir the data is
// kept in memory and is gone when the process exits.
'use strict';
// Node 20 turns a client that disconnects mid-request (a cancelled context, a timeout)
// into an uncaught ECONNRESET/EPIPE that kills kinesalite and dynalite. Ignore exactly
// those; anything else still crashes the server loudly.
const benign = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);
process.on('uncaughtException', (err) => {
  if (err && (benign.has(err.code) || err.message === 'aborted')) return;
  console.error(err);
  process.exit(1);
});
const [service, portArg, dataDir] = process.argv.slice(2);
const port = Number(portArg);
if (!['kinesis', 'dynamodb'].includes(service) || !Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node serve.js kinesis|dynamodb PORT [dataDir]');
  process.exit(2);
}
const opts = dataDir ? { path: dataDir } : {};
let server;
if (service === 'kinesis') {
  // Fast stream lifecycle for tests; AWS itself takes seconds.
  server = require('kinesalite')({ ...opts, createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 50 });
} else {
  server = require('dynalite')({ ...opts, createTableMs: 50, deleteTableMs: 50, updateTableMs: 50 });
}
server.listen(port, '127.0.0.1', (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log(`ready ${service} 127.0.0.1:${server.address().port}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
