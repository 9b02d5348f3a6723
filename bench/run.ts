/**
 * `npm run bench`: runs every benchmark in this folder, one after the other
 * (never two at once: they would measure each other), and rewrites
 * BENCHMARKS.md with the machine, the versions, a table per benchmark and
 * how to re-run one.
 *
 * Sections, in run order and in BENCHMARKS.md order: engine, memory,
 * eviction, sweep, hit-ratio (the L1 engine in process, and in child
 * processes or worker threads for memory and eviction), warming (the example
 * service under the perf workloads), then http, instructions (the http
 * scenarios' instructions per request, under callgrind) and redis (servers
 * and Redis around it).
 *
 *   npm run bench                                  # all, then BENCHMARKS.md
 *   npm run bench -- engine memory eviction sweep  # some; BENCHMARKS.md keeps the others' last section
 *   node dist/bench/engine.js                      # one, printed only
 */
import os from 'node:os'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import * as engine from './engine.js'
import * as memory from './memory.js'
import * as eviction from './eviction.js'
import * as sweep from './sweep.js'
import * as hitRatio from './hit-ratio.js'
import * as warming from './warming.js'
import * as http from './http.js'
import * as instructions from './instructions.js'
import * as redis from './redis.js'
import { targetsTable } from './support/format.js'
import { packageVersions } from './support/machine.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const OUT = `${ROOT}BENCHMARKS.md`

const log = (line: string): void => { process.stderr.write(`${line}\n`) }

const PACKAGES = ['fastify', '@fastify/jwt', 'fast-jwt', 'quick-lru', 'lru-cache', 'async-cache-dedupe', 'bentocache', 'ioredis', 'mitata', 'autocannon']

interface Section { name: string, title: string, rerun: string, body: string }

async function engineSection (): Promise<Section> {
  log('engine micro-benchmark...')
  const result = await engine.run({ log })
  const targets = result.targets.map((t) => ({ name: t.name, pass: t.pass, detail: `${t.value} ${t.unit} (${t.atLeast ? '>=' : '<='} ${t.threshold} ${t.unit})` }))
  return {
    name: 'engine',
    title: 'L1 engine: a cache hit, in process (mitata)',
    rerun: 'npm run build && node dist/bench/engine.js',
    body: `${targetsTable(targets)}\n\n\`\`\`\n${engine.formatResult(result)}\n\`\`\``
  }
}

interface MarkdownBench<R> {
  run: (options: { log: (line: string) => void }) => Promise<R>
  formatResult: (result: R) => string
}

/** A section whose report is markdown already and starts with its own targets table (memory, eviction, sweep). */
function markdownSection<R> (bench: MarkdownBench<R>, section: Omit<Section, 'body'>, what: string): () => Promise<Section> {
  return async () => {
    log(`${section.name} benchmark (${what})...`)
    const result = await bench.run({ log })
    return { ...section, body: bench.formatResult(result) }
  }
}

const memorySection = markdownSection(memory, {
  name: 'memory',
  title: 'Memory: what an entry retains, against lru-cache, and what the cache accounts',
  rerun: 'npm run build && node dist/bench/memory.js [--runs 3] [--concurrency 2] [--only s1-authz,s1-lru]'
}, 'child processes, against lru-cache')

const evictionSection = markdownSection(eviction, {
  name: 'eviction',
  title: 'Eviction: one insert into a full cache, against lru-cache',
  rerun: 'npm run build && node dist/bench/eviction.js [--sizes 10000,100000,1000000] [--rounds 5] [--batch 10000] [--deadline 20]'
}, 'insert cost against lru-cache, a worker thread per size')

const sweepSection = markdownSection(sweep, {
  name: 'sweep',
  title: 'Sweeps: the event loop while expired entries go',
  rerun: 'npm run build && node dist/bench/sweep.js [--entries 1000000] [--wait 60]'
}, 'event-loop delay of the background sweep')

const hitRatioSection = markdownSection(hitRatio, {
  name: 'hit-ratio',
  title: 'Hit ratio: the eviction policies on seeded traces, against lru-cache and Belady (optimal)',
  rerun: 'npm run build && node dist/bench/hit-ratio.js [--requests 4000000] [--only zipf-0.8,scan,...] [--denials 100000]'
}, 'seeded traces through the engine, lru-cache and Belady')

const warmingSection = markdownSection(warming, {
  name: 'warming',
  title: 'Batch checks and predictive warming: the perf workloads, batching and warming off and on, and a cold list',
  rerun: 'npm run build && node dist/bench/warming.js [--requests 20000] [--warmup 20000] [--only projects,dashboard,scroll,views,cold-list]'
}, 'the example service under the perf workloads, four configurations each')

async function httpSection (): Promise<Section> {
  log('HTTP benchmark (autocannon, server in a child process)...')
  const result = await http.run({ log })
  return {
    name: 'http',
    title: 'HTTP: a route check through Fastify (autocannon, 50 connections)',
    rerun: 'npm run build && node dist/bench/http.js [--duration 3] [--rounds 5]',
    body: `${targetsTable(result.targets)}\n\n\`\`\`\n${http.formatTable(result)}\n\`\`\``
  }
}

const instructionsSection = markdownSection(instructions, {
  name: 'instructions',
  title: 'HTTP, counted: instructions per request under callgrind',
  rerun: 'npm run build && node dist/bench/instructions.js [--n1 1000] [--n2 11000] [--repeats 2] [--warmup 10000]'
}, 'callgrind, a child process per scenario and request count')

async function redisSection (): Promise<Section> {
  log('Redis benchmark (propagation, L2 hit)...')
  const result = await redis.run({ log })
  if ('skipped' in result && result.skipped !== undefined) {
    return { name: 'redis', title: 'Redis: invalidation propagation and the L2 hit', rerun: 'npm run build && node dist/bench/redis.js', body: `Skipped: ${result.skipped}` }
  }
  const ok = result as redis.RedisBenchOk
  const p = ok.propagation
  const targets = [{ name: 'propagation p99 (publish on A to applied on B), 1,000 invalidations', pass: p.latencyMs.p99 < ok.targetP99Ms, detail: `${p.latencyMs.p99.toFixed(3)} ms (< ${ok.targetP99Ms} ms)` }]
  return {
    name: 'redis',
    title: 'Redis: invalidation propagation between instances, and the L2 hit',
    rerun: 'npm run build && node dist/bench/redis.js',
    body: `${targetsTable(targets)}\n\n\`\`\`\n${redis.formatResult(result)}\n\`\`\``
  }
}

const RUNNERS: Record<string, () => Promise<Section>> = {
  engine: engineSection,
  memory: memorySection,
  eviction: evictionSection,
  sweep: sweepSection,
  'hit-ratio': hitRatioSection,
  warming: warmingSection,
  http: httpSection,
  instructions: instructionsSection,
  redis: redisSection
}

/** The sections of the current BENCHMARKS.md, to keep those not re-run. */
function previousSections (): Map<string, string> {
  const kept = new Map<string, string>()
  if (!existsSync(OUT)) return kept
  const text = readFileSync(OUT, 'utf8')
  for (const match of text.matchAll(/<!-- bench:([\w-]+) -->\n([\s\S]*?)<!-- \/bench:\1 -->/g)) kept.set(match[1], match[2])
  return kept
}

async function main (): Promise<void> {
  const asked = process.argv.slice(2).filter((a) => !a.startsWith('-'))
  for (const name of asked) if (RUNNERS[name] === undefined) throw new Error(`unknown benchmark ${JSON.stringify(name)} (${Object.keys(RUNNERS).join(', ')})`)
  const names = asked.length > 0 ? asked : Object.keys(RUNNERS)
  const kept = previousSections()
  const fresh = new Map<string, string>()
  const started = new Date()
  const loadAtStart = os.loadavg()
  for (const name of names) {
    const t0 = Date.now()
    const section = await RUNNERS[name]()
    fresh.set(name, `## ${section.title}\n\nRe-run: \`${section.rerun}\` (took ${Math.round((Date.now() - t0) / 1000)} s on ${started.toISOString().slice(0, 10)}).\n\n${section.body}\n`)
  }
  const cpus = os.cpus()
  const versions = packageVersions(PACKAGES)
  const header = [
    '# Benchmarks',
    '',
    'Written by `npm run bench` (bench/run.ts); every number below comes from its last run. Benchmarks run one after the other, never two at once, and compare contenders side by side in interleaved rounds. No test asserts on time: speed is measured here.',
    '',
    `- Machine: ${cpus[0]?.model ?? 'unknown'}, ${cpus.length} cores, ${Math.round(os.totalmem() / 1024 ** 3)} GiB, ${os.platform()} ${os.release()}`,
    `- Node ${process.version} (V8 ${process.versions.v8}); load average at the start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}`,
    `- Packages: ${Object.entries(versions).map(([name, v]) => `${name} ${v}`).join(', ')}`,
    '',
    'Reading the HTTP numbers: on this 2-core VM req/s moves 10-40% between runs of the same server, even with the load generator and the server pinned to a core each, so the HTTP targets use the median of per-round paired ratios. A CPU profile of the `plugin` server (`node --cpu-prof`) puts the plugin\'s own route check at about 0.1-0.3 us of the ~40 us a request costs; the rest is Fastify, @fastify/jwt and the socket write (`writev`, 15-19 us). In some runs the `plugin-bus` server (strictly more code than `plugin`) measured at the JWT-only rate while `plugin` measured 10-20% below it; their profiles differed only in kernel write time, not in JavaScript. The in-process rows isolate what the plugin adds.',
    ''
  ].join('\n')
  const parts = [header]
  for (const name of Object.keys(RUNNERS)) {
    const body = fresh.get(name) ?? kept.get(name)
    if (body !== undefined) parts.push(`<!-- bench:${name} -->\n${body}<!-- /bench:${name} -->\n`)
  }
  writeFileSync(OUT, parts.join('\n'))
  log(`wrote ${OUT}`)
}

main().catch((error: Error) => {
  process.stderr.write(`${error.stack ?? error.message}\n`)
  process.exitCode = 1
})
