// The graphile-worker side of `provisio-bench peers`: queues N jobs of one task with
// addJobs, then runs them with the given concurrency, plain or batched, and prints one JSON
// line with the seconds the run took. Written next to node_modules by the bench.
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import pg from "pg";

const [connectionString, mode, jobsArg, sleepArg, concurrencyArg] = process.argv.slice(2);
const jobs = Number(jobsArg);
const sleepMs = Number(sleepArg);
const concurrency = Number(concurrencyArg);
if (!connectionString || !["plain", "batched"].includes(mode) || !(jobs > 0)) {
  console.error("usage: peer_worker.mjs URL plain|batched JOBS SLEEP_MS CONCURRENCY");
  process.exit(2);
}

const utils = await makeWorkerUtils({ connectionString });
await utils.migrate();
const addStart = performance.now();
// The same for both modes, so only the running differs.
for (let i = 0; i < jobs; i += 1000) {
  const specs = [];
  for (let j = i; j < Math.min(jobs, i + 1000); j++) {
    specs.push({ identifier: "act", payload: { n: j } });
  }
  await utils.addJobs(specs);
}
const addSecs = (performance.now() - addStart) / 1000;
await utils.release();

// The batching settings graphile-worker's performance guide describes: a local queue
// that fetches many jobs per query, and completions written together.
const batched = {
  worker: {
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};

// Errors only: a line per job would cost the run more than the job.
const quiet = new Logger(() => (level, message) => {
  if (level === "error") console.error(message);
});

let done = 0;
let finish;
const allDone = new Promise((resolve) => (finish = resolve));
const start = performance.now();
const runner = await run({
  connectionString,
  concurrency,
  noHandleSignals: true,
  pollInterval: 1000,
  logger: quiet,
  preset: mode === "batched" ? batched : {},
  taskList: {
    act: async () => {
      if (sleepMs > 0) await new Promise((r) => setTimeout(r, sleepMs));
      if (++done === jobs) finish(performance.now());
    },
  },
});
await allDone;
// Done when the last completion is written (completed jobs are deleted), as Provisio's
// run is done when no job is open.
const client = new pg.Client({ connectionString });
await client.connect();
for (;;) {
  const r = await client.query("SELECT COUNT(*)::int AS n FROM graphile_worker._private_jobs");
  if (r.rows[0].n === 0) break;
  await new Promise((r) => setTimeout(r, 5));
}
const end = performance.now();
await client.end();
await runner.stop();
const runSecs = (end - start) / 1000;
console.log(JSON.stringify({ mode, jobs, add_s: addSecs, run_s: runSecs }));
