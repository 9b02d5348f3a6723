/**
 * HTTP benchmark: what a cached route check costs on top of JWT verification.
 *
 *     npm run build && node dist/bench/http.js [--duration 5] [--rounds 3] [--warmup 1]
 *       [--connections 50] [--pipelining 1] [--ids 1000] [--scenarios jwt,plugin,...] [--no-in-process]
 *
 * (or BENCH_DURATION, BENCH_ROUNDS, BENCH_WARMUP, BENCH_CONNECTIONS in the environment).
 *
 * Every scenario runs in its own server process (bench/http-server.ts,
 * forked fresh for every run) and is loaded by autocannon from this process
 * over 127.0.0.1: `GET /generations/:generationId/media` with one user's
 * Bearer token, rotating over `ids` generation ids (all granted, all warmed
 * in the server before it reports ready, then a warm-up run that is not
 * recorded). Rounds are interleaved: each round runs every scenario once, in
 * an order rotated by one per round, and the report takes the median over
 * rounds. Besides autocannon's req/s and latency, each server reports its
 * own CPU time over the measured run: CPU µs per request does not depend on
 * whether the load generator (same machine) kept up, and a busy share below
 * ~90% of one core means the req/s of that run says more about the machine
 * than about the server.
 *
 * Scenarios: `jwt` (JWT verify only), `plugin` (JWT + this plugin's route
 * check, all hits), `dedupe` (JWT + the same check through
 * async-cache-dedupe, all hits), `nocache` (JWT + the resolver on every
 * request, a simulated 2 ms backend), `plugin-bus` (`plugin` with the Redis
 * L2 and bus on, all L1 hits; skipped when Redis does not answer).
 *
 * Then, in this process (mitata, no HTTP): one `await
 * request.authz.generationAccess(id)` hit against the engine's bare
 * synchronous `app.authz.lookup(kind, id, userId)` hit.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import os from 'node:os'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import Fastify, { type FastifyRequest } from 'fastify'
import { measure } from 'mitata'
import { Redis } from 'ioredis'
import authzCache from '../lib/index.js'
import type { Decision } from '../lib/index.js'
import {
  DEFAULT_IDS,
  SCENARIOS,
  USER_ID,
  benchToken,
  deleteKeys,
  generationIds,
  type Scenario,
  type ServerStats
} from './http-server.js'

export interface HttpBenchOptions {
  /** Seconds of each measured run. Default 3. */
  duration?: number
  /** Seconds of the unrecorded warm-up run before each measured run. Default 1. */
  warmup?: number
  /** Interleaved rounds. Default 5. */
  rounds?: number
  /** Default 50. */
  connections?: number
  /** Default 1. */
  pipelining?: number
  /** Distinct generation ids the load rotates over. Default 1000. */
  ids?: number
  /** Scenarios to run, in this base order. Default all five. */
  scenarios?: Scenario[]
  /** Run the in-process (mitata) measurement. Default true. */
  inProcess?: boolean
  /** Redis for `plugin-bus`. Default REDIS_URL or redis://127.0.0.1:6379. */
  redisUrl?: string
  /** Progress lines. Default: none. */
  log?: (line: string) => void
}

export interface HttpRun {
  round: number
  /** Position of the scenario in its round (0-based). */
  position: number
  requestsPerSecond: number
  latencyP50Ms: number
  latencyP99Ms: number
  requests: number
  non2xx: number
  errors: number
  timeouts: number
  /** Resolver calls during warm-up and measurement (0: every check hit a cache). */
  resolverCalls: number | null
  /** Plugin scenarios: engine misses during warm-up and measurement (0: all hits). */
  engineMisses: number | null
  /** Server process CPU time (user + system) per request over the measured run, µs. */
  serverCpuUsPerRequest: number | null
  /** Server CPU time / wall time over the measured run (1 = one core saturated). */
  serverCpuBusy: number | null
  /** Fork to warmed and listening, ms. */
  serverReadyMs: number
  /** The whole run: start, warm-up, measurement, stop. */
  wallSeconds: number
}

export interface HttpScenarioResult {
  scenario: Scenario
  description: string
  /** Why the scenario did not run, when it did not. */
  skipped?: string
  runs: HttpRun[]
  /** Medians over rounds. */
  requestsPerSecond: number
  latencyP50Ms: number
  latencyP99Ms: number
  /** requestsPerSecond / jwt's requestsPerSecond. */
  ratioVsJwt: number | null
  /** Median over rounds of this scenario's req/s divided by jwt's in the same round. */
  pairedRatioVsJwt: number | null
  /** Median server CPU µs per request (does not depend on whether the load generator kept up). */
  serverCpuUsPerRequest: number | null
  /** Median server CPU busy fraction over the measured runs. */
  serverCpuBusy: number | null
  /** serverCpuUsPerRequest minus jwt's: what this scenario adds per request, µs of server CPU. */
  serverCpuUsOverJwt: number | null
}

export interface TargetResult {
  name: string
  /** null when it could not be evaluated (a scenario skipped). */
  pass: boolean | null
  detail: string
}

export interface InProcessResult {
  /** Mean ns per `app.authz.lookup(handle, id, userId)` hit (synchronous). */
  lookupNs: number
  /** Mean ns per `await request.authz.generationAccess(id)` hit on a captured request. */
  requestAuthzNs: number
  /** Mean ns per `await app.authz.getOrLoad(handle, userId, id)` hit (the engine's promise API). */
  getOrLoadNs: number
  /** Mean ns per `await Promise.resolve(app.authz.lookup(...))`: the floor of any promise-returning API. */
  promiseFloorNs: number
  /** requestAuthzNs / lookupNs (target <= 1.3). */
  ratio: number
  /** requestAuthzNs / promiseFloorNs. */
  ratioVsPromiseFloor: number
  note: string
}

export interface HttpBenchResult {
  settings: {
    duration: number
    warmup: number
    rounds: number
    connections: number
    pipelining: number
    ids: number
    scenarios: Scenario[]
    /** Scenario order of each round. */
    order: Scenario[][]
    backendMs: number
  }
  environment: { node: string, platform: string, cpus: number, cpuModel: string, loadAverage: number[] }
  scenarios: HttpScenarioResult[]
  targets: TargetResult[]
  inProcess: InProcessResult | null
  notes: string[]
  elapsedSeconds: number
}

const DESCRIPTIONS: Record<Scenario, string> = {
  jwt: 'JWT verify only (fast-jwt verify cache)',
  plugin: 'JWT + fastify-authz-cache route check, all L1 hits',
  dedupe: 'JWT + async-cache-dedupe (memory) check, all hits',
  nocache: 'JWT + resolver on every request (2 ms backend)',
  'plugin-bus': 'as plugin, Redis L2 + bus on, all L1 hits'
}

const SERVER_PATH = fileURLToPath(new URL('./http-server.js', import.meta.url))
const live = new Set<ChildProcess>()

function median (values: number[]): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function medianOrNull (values: Array<number | null>): number | null {
  const known = values.filter((v): v is number => v !== null)
  return known.length === 0 ? null : round(median(known), 2)
}

function round (value: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

async function redisAvailable (url: string): Promise<string | true> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, connectTimeout: 1000, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    return true
  } catch (error) {
    return (error as Error).message
  } finally {
    client.disconnect()
  }
}

/**
 * On a 2-core machine the load generator and the server share the CPUs;
 * pinning each to a core of its own (taskset, every thread) takes the
 * scheduler's placement out of the numbers. Off when taskset is missing.
 */
const LOAD_CPU = 0
const SERVER_CPU = 1
let pinning = false

function pin (pid: number, cpu: number | string): boolean {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

interface RunningServer {
  port: number
  /** Restarts the server's CPU clock (just before the measured run). */
  mark: () => Promise<void>
  stop: () => Promise<ServerStats | undefined>
}

function startServer (scenario: Scenario, env: Record<string, string>): Promise<RunningServer> {
  const child = fork(SERVER_PATH, [scenario, '0'], {
    env: { ...process.env, ...env },
    execArgv: [],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc']
  })
  live.add(child)
  if (pinning) pin(child.pid as number, SERVER_CPU)
  const exited = new Promise<void>((resolve) => child.once('exit', () => { live.delete(child); resolve() }))
  let stats: ServerStats | undefined
  let marked: (() => void) | undefined
  child.on('message', (message: { type?: string } & ServerStats) => {
    if (message?.type === 'stats') {
      stats = { resolverCallsAfterReady: message.resolverCallsAfterReady, cpuMicros: message.cpuMicros, wallMs: message.wallMs, engine: message.engine }
    } else if (message?.type === 'marked') {
      marked?.()
    }
  })
  const mark = (): Promise<void> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${scenario} server did not answer mark`)), 5000)
    marked = () => { clearTimeout(timer); resolve() }
    child.send({ type: 'mark' })
  })
  const stop = async (): Promise<ServerStats | undefined> => {
    if (child.exitCode === null && child.signalCode === null) {
      if (child.connected) child.send({ type: 'stop' })
      else child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    return stats
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${scenario} server did not report ready within 30 s`))
    }, 30_000)
    child.on('message', (message: { type?: string, port?: number }) => {
      if (message?.type === 'ready') {
        clearTimeout(timer)
        resolve({ port: message.port as number, mark, stop })
      }
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${scenario} server exited before ready (code ${code}, signal ${signal})`))
    })
  })
}

/**
 * The rotating paths, as autocannon options. With pipelining 1 every
 * connection gets its own slice (connection k: paths k, k + connections,
 * ...), so together they cover every id while autocannon builds each request
 * buffer once instead of once per connection (50 x 1,000 builds take ~0.5 s
 * of client CPU per run). Autocannon refuses per-connection lists with
 * pipelining, so then every connection rotates over all of them.
 */
function connectionRequests (paths: string[], connections: number, pipelining: number, authorization: string): Pick<autocannon.Options, 'requests' | 'setupClient'> {
  const request = (path: string): autocannon.Request => ({ method: 'GET', path, headers: { authorization } })
  if (pipelining > 1) return { requests: paths.map(request) }
  let next = 0
  return {
    requests: [request(paths[0])],
    setupClient (client) {
      const k = next++ % connections
      const mine: autocannon.Request[] = []
      for (let i = k; i < paths.length; i += connections) mine.push(request(paths[i]))
      if (mine.length === 0) mine.push(request(paths[k % paths.length]))
      client.setRequests(mine)
    }
  }
}

/** Fails unless the token is required and accepted on this server. */
async function sanityCheck (scenario: Scenario, base: string, path: string, authorization: string): Promise<void> {
  const ok = await fetch(base + path, { headers: { authorization } })
  const body = await ok.text()
  if (ok.status !== 200) throw new Error(`${scenario}: GET ${path} with the token answered ${ok.status} ${body}`)
  const anonymous = await fetch(base + path)
  await anonymous.arrayBuffer()
  if (anonymous.status !== 401) throw new Error(`${scenario}: GET ${path} without a token answered ${anonymous.status}, expected 401`)
}

interface RunSettings {
  duration: number
  warmup: number
  connections: number
  pipelining: number
  ids: number
  redisUrl: string
  redisTag: string
  token: string
}

async function runScenario (scenario: Scenario, roundIndex: number, position: number, s: RunSettings): Promise<HttpRun> {
  const started = performance.now()
  const server = await startServer(scenario, {
    AUTHZ_BENCH_IDS: String(s.ids),
    AUTHZ_BENCH_REDIS_TAG: s.redisTag,
    REDIS_URL: s.redisUrl
  })
  const readyMs = performance.now() - started
  let stats: ServerStats | undefined
  let result: autocannon.Result
  try {
    const base = `http://127.0.0.1:${server.port}`
    const authorization = `Bearer ${s.token}`
    const paths = generationIds(s.ids).map((id) => `/generations/${id}/media`)
    await sanityCheck(scenario, base, paths[0], authorization)
    const load = (duration: number): Promise<autocannon.Result> => autocannon({
      url: base,
      connections: s.connections,
      pipelining: s.pipelining,
      duration,
      headers: { authorization },
      ...connectionRequests(paths, s.connections, s.pipelining, authorization)
    })
    if (s.warmup > 0) await load(s.warmup)
    await server.mark()
    result = await load(s.duration)
  } finally {
    stats = await server.stop()
  }
  return {
    round: roundIndex,
    position,
    // The mean of autocannon's per-second samples: `total / duration` would count request building and connecting as run time.
    requestsPerSecond: round(result.requests.average, 1),
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
    requests: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    resolverCalls: stats?.resolverCallsAfterReady ?? null,
    engineMisses: stats?.engine?.misses ?? null,
    serverCpuUsPerRequest: stats === undefined || result.requests.total === 0 ? null : round(stats.cpuMicros / result.requests.total, 2),
    serverCpuBusy: stats === undefined || stats.wallMs <= 0 ? null : round(stats.cpuMicros / 1000 / stats.wallMs, 2),
    serverReadyMs: Math.round(readyMs),
    wallSeconds: round((performance.now() - started) / 1000, 2)
  }
}

/** One request.authz hit vs the engine's bare hit, in this process. */
export async function inProcessBench (ids = DEFAULT_IDS): Promise<InProcessResult> {
  const app = Fastify({ logger: false })
  await app.register(authzCache, {
    preset: 'production',
    admin: false,
    authenticate: false,
    getUserId: () => USER_ID,
    cleanupIntervalSeconds: 0,
    resolvers: { generation: async () => ({ granted: true, access: ['read'] }) }
  })
  let captured: FastifyRequest | undefined
  app.get('/capture', async (request) => {
    captured = request
    return { ok: true }
  })
  await app.ready()
  try {
    await app.inject('/capture')
    const request = captured as FastifyRequest
    const list = generationIds(ids)
    const grant: Decision = { granted: true, access: ['read'] }
    for (const id of list) app.authz.setGenerationAccess(id, USER_ID, grant)
    const handle = app.authz.kind('generation')
    const engine = app.authz
    const authz = request.authz
    let i = 0
    const next = (): string => {
      const id = list[i]
      if (++i === list.length) i = 0
      return id
    }
    // Every variant must hit: a miss would load, which is another benchmark.
    if (engine.lookup(handle, list[0], USER_ID) === undefined) throw new Error('in-process bench: the cache is not warm')
    if ((await authz.generationAccess(list[1])).granted !== true) throw new Error('in-process bench: request.authz did not grant')
    const before = engine.getStats()

    const lookup = await measure(() => engine.lookup(handle, next(), USER_ID))
    const requestAuthz = await measure(() => authz.generationAccess(next()))
    const getOrLoad = await measure(() => engine.getOrLoad(handle, USER_ID, next()))
    const promiseFloor = await measure(() => Promise.resolve(engine.lookup(handle, next(), USER_ID)))

    const after = engine.getStats()
    if (after.misses !== before.misses) throw new Error(`in-process bench: ${after.misses - before.misses} misses while measuring hits`)
    return {
      lookupNs: round(lookup.avg, 1),
      requestAuthzNs: round(requestAuthz.avg, 1),
      getOrLoadNs: round(getOrLoad.avg, 1),
      promiseFloorNs: round(promiseFloor.avg, 1),
      ratio: round(requestAuthz.avg / lookup.avg, 2),
      ratioVsPromiseFloor: round(requestAuthz.avg / promiseFloor.avg, 2),
      note: 'lookup is synchronous (index read, used bit, hit counter, 1-in-16 timing sample). ' +
        'request.authz.generationAccess is a promise-returning method: the user id (no verification needed here), ' +
        'the kind handle, an id check, the same lookup, and Promise.resolve of the hit; ' +
        'the benchmark loop awaiting the result is part of what is measured. ' +
        'promiseFloor is the same lookup behind one resolved promise, awaited the same way.'
    }
  } finally {
    await app.close()
  }
}

function numberOption (value: string | undefined, env: string | undefined, fallback: number, name: string, min: number): number {
  const raw = value ?? env
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min}, got ${JSON.stringify(raw)}`)
  return n
}

/** Runs the HTTP rounds and the in-process measurement; the result is JSON-able. */
export async function run (options: HttpBenchOptions = {}): Promise<HttpBenchResult> {
  const started = performance.now()
  const log = options.log ?? (() => {})
  const duration = options.duration ?? 3
  const warmup = options.warmup ?? 1
  const rounds = options.rounds ?? 5
  const connections = options.connections ?? 50
  const pipelining = options.pipelining ?? 1
  const ids = options.ids ?? DEFAULT_IDS
  const redisUrl = options.redisUrl ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const requested = options.scenarios ?? [...SCENARIOS]
  for (const name of requested) if (!SCENARIOS.includes(name)) throw new Error(`unknown scenario ${JSON.stringify(name)} (known: ${SCENARIOS.join(', ')})`)
  const notes: string[] = []
  const skipped = new Map<Scenario, string>()

  if (requested.includes('plugin-bus')) {
    const answer = await redisAvailable(redisUrl)
    if (answer !== true) {
      skipped.set('plugin-bus', `Redis at ${redisUrl} did not answer (${answer})`)
      notes.push(`plugin-bus skipped: Redis at ${redisUrl} did not answer (${answer}).`)
    }
  }
  const scenarios = requested.filter((name) => !skipped.has(name))
  const redisTag = randomUUID()
  const settings: RunSettings = { duration, warmup, connections, pipelining, ids, redisUrl, redisTag, token: benchToken() }

  pinning = os.cpus().length >= 2 && pin(process.pid, LOAD_CPU)
  if (pinning) notes.push(`load generator pinned to CPU ${LOAD_CPU}, each server to CPU ${SERVER_CPU} (taskset, all threads).`)
  const order: Scenario[][] = []
  const runs = new Map<Scenario, HttpRun[]>(requested.map((name) => [name, []]))
  const onExit = (): void => { for (const child of live) child.kill('SIGKILL') }
  process.once('exit', onExit)
  try {
    for (let r = 0; r < rounds; r++) {
      const shift = scenarios.length === 0 ? 0 : r % scenarios.length
      const roundOrder = [...scenarios.slice(shift), ...scenarios.slice(0, shift)]
      order.push(roundOrder)
      for (let p = 0; p < roundOrder.length; p++) {
        const scenario = roundOrder[p]
        const result = await runScenario(scenario, r, p, settings)
        runs.get(scenario)?.push(result)
        log(`round ${r + 1}/${rounds} ${scenario.padEnd(10)} ${result.requestsPerSecond.toFixed(0).padStart(7)} req/s  p50 ${result.latencyP50Ms} ms  p99 ${result.latencyP99Ms} ms` +
          `  server CPU ${result.serverCpuUsPerRequest} µs/req, busy ${result.serverCpuBusy}  (ready ${result.serverReadyMs} ms, run ${result.wallSeconds} s)` +
          (result.non2xx + result.errors + result.timeouts > 0 ? `  non2xx ${result.non2xx} errors ${result.errors} timeouts ${result.timeouts}` : ''))
        if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
          notes.push(`${scenario} round ${r + 1}: ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts: that run is not a clean measurement.`)
        }
        if (scenario !== 'nocache' && ((result.resolverCalls ?? 0) > 0 || (result.engineMisses ?? 0) > 0)) {
          notes.push(`${scenario} round ${r + 1}: ${result.resolverCalls ?? 0} resolver calls, ${result.engineMisses ?? 0} cache misses while measuring: not all hits.`)
        }
      }
    }
  } finally {
    process.removeListener('exit', onExit)
    if (scenarios.includes('plugin-bus')) {
      try {
        await deleteKeys(redisUrl, `authz-bench:${redisTag}:`)
      } catch (error) {
        notes.push(`Redis cleanup of authz-bench:${redisTag}:* failed: ${(error as Error).message}`)
      }
    }
  }

  const jwtRuns = runs.get('jwt') ?? []
  const jwtRps = median(jwtRuns.map((run) => run.requestsPerSecond))
  const results: HttpScenarioResult[] = requested.map((scenario) => {
    const list = runs.get(scenario) ?? []
    const rps = median(list.map((run) => run.requestsPerSecond))
    const paired = list.flatMap((run) => {
      const base = jwtRuns.find((j) => j.round === run.round)
      return base === undefined ? [] : [run.requestsPerSecond / base.requestsPerSecond]
    })
    return {
      scenario,
      description: DESCRIPTIONS[scenario],
      ...(skipped.has(scenario) ? { skipped: skipped.get(scenario) } : {}),
      runs: list,
      requestsPerSecond: list.length === 0 ? 0 : round(rps, 1),
      latencyP50Ms: list.length === 0 ? 0 : median(list.map((run) => run.latencyP50Ms)),
      latencyP99Ms: list.length === 0 ? 0 : median(list.map((run) => run.latencyP99Ms)),
      ratioVsJwt: list.length === 0 || !(jwtRps > 0) ? null : round(rps / jwtRps, 3),
      pairedRatioVsJwt: paired.length === 0 ? null : round(median(paired), 3),
      serverCpuUsPerRequest: medianOrNull(list.map((run) => run.serverCpuUsPerRequest)),
      serverCpuBusy: medianOrNull(list.map((run) => run.serverCpuBusy)),
      serverCpuUsOverJwt: null
    }
  })
  const byName = (name: Scenario): HttpScenarioResult | undefined => results.find((r) => r.scenario === name && r.runs.length > 0)

  const targets: TargetResult[] = []
  const compare = (name: string, a: Scenario, b: Scenario, factor: number): void => {
    const x = byName(a)
    const y = byName(b)
    if (x === undefined || y === undefined) {
      targets.push({ name, pass: null, detail: `not evaluated: ${x === undefined ? a : b} did not run${skipped.has(x === undefined ? a : b) ? ` (${skipped.get(x === undefined ? a : b)})` : ''}` })
      return
    }
    // Paired by round: the two ran back to back under the same machine noise, so the
    // median of the per-round ratios is steadier than a ratio of medians.
    const perRound = x.runs.flatMap((run) => {
      const other = y.runs.find((o) => o.round === run.round)
      return other === undefined ? [] : [run.requestsPerSecond / other.requestsPerSecond]
    })
    const ratio = perRound.length > 0 ? median(perRound) : x.requestsPerSecond / y.requestsPerSecond
    targets.push({
      name,
      pass: ratio >= factor,
      detail: `median over ${perRound.length} rounds of ${a}/${b} req/s = ${ratio.toFixed(3)} (needs >= ${factor}; medians ${x.requestsPerSecond.toFixed(0)} vs ${y.requestsPerSecond.toFixed(0)} req/s; per round ${perRound.map((v) => v.toFixed(2)).join(', ')})`
    })
  }
  compare('plugin >= 95% of jwt req/s', 'plugin', 'jwt', 0.95)
  compare('plugin >= dedupe req/s', 'plugin', 'dedupe', 1)
  compare('plugin-bus within 5% of plugin req/s (no slower than 0.95x)', 'plugin-bus', 'plugin', 0.95)

  let inProcess: InProcessResult | null = null
  if (options.inProcess !== false) {
    log('in-process: request.authz vs engine lookup (mitata)')
    inProcess = await inProcessBench(ids)
    // Like with like: request.authz answers a promise, so its bare-engine counterpart is the
    // engine's promise API; the sync lookup and the promise floor are printed beside it.
    const vsGetOrLoad = round(inProcess.requestAuthzNs / inProcess.getOrLoadNs, 2)
    targets.push({
      name: 'request.authz hit <= 1.3x the engine\'s bare hit (await getOrLoad)',
      pass: vsGetOrLoad <= 1.3,
      detail: `${inProcess.requestAuthzNs} ns vs ${inProcess.getOrLoadNs} ns = ${vsGetOrLoad}x; vs the sync lookup (${inProcess.lookupNs} ns) ${inProcess.ratio}x, vs one resolved promise around it (${inProcess.promiseFloorNs} ns) ${inProcess.ratioVsPromiseFloor}x`
    })
  }

  const jwtCpu = byName('jwt')?.serverCpuUsPerRequest ?? null
  for (const r of results) r.serverCpuUsOverJwt = jwtCpu === null || r.serverCpuUsPerRequest === null ? null : round(r.serverCpuUsPerRequest - jwtCpu, 2)
  const unsaturated = results.filter((r) => r.scenario !== 'nocache' && r.serverCpuBusy !== null && r.serverCpuBusy < 0.9)
  if (unsaturated.length > 0) {
    notes.push(`server below 90% of one core in ${unsaturated.map((r) => `${r.scenario} (${Math.round((r.serverCpuBusy as number) * 100)}%)`).join(', ')}: ` +
      'req/s there is bounded by the load generator or by other processes, not by the server (server CPU µs/req stays comparable). Rerun on a quiet machine.')
  }
  if (duration < 3 || rounds < 3) notes.push(`short settings (${duration} s x ${rounds} rounds): indicative only.`)
  const cpus = os.cpus()
  if (pinning) pin(process.pid, `0-${cpus.length - 1}`)
  if (!pinning) notes.push(`load generator (autocannon, 1 thread) and server share ${cpus.length} CPU cores.`)

  return {
    settings: { duration, warmup, rounds, connections, pipelining, ids, scenarios: requested, order, backendMs: 2 },
    environment: { node: process.version, platform: `${process.platform} ${process.arch}`, cpus: cpus.length, cpuModel: cpus[0]?.model ?? 'unknown', loadAverage: os.loadavg().map((v) => round(v, 2)) },
    scenarios: results,
    targets,
    inProcess,
    notes,
    elapsedSeconds: round((performance.now() - started) / 1000, 1)
  }
}

/** The report as a Markdown-ish table (used when run directly). */
export function formatTable (result: HttpBenchResult): string {
  const lines: string[] = []
  const s = result.settings
  lines.push(`HTTP: ${s.rounds} interleaved rounds x ${s.duration} s (+${s.warmup} s warm-up), ${s.connections} connections, pipelining ${s.pipelining}, ${s.ids} ids; medians over rounds`)
  lines.push('')
  lines.push('| scenario | req/s | vs jwt | p50 ms | p99 ms | server CPU µs/req | Δ vs jwt | server busy | what |')
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---|')
  for (const r of result.scenarios) {
    if (r.runs.length === 0) {
      lines.push(`| ${r.scenario} | skipped | | | | | | | ${r.skipped ?? 'did not run'} |`)
      continue
    }
    lines.push(`| ${r.scenario} | ${Math.round(r.requestsPerSecond).toLocaleString('en-US')} | ${r.ratioVsJwt === null ? '' : r.ratioVsJwt.toFixed(3)} | ${r.latencyP50Ms} | ${r.latencyP99Ms} | ${r.serverCpuUsPerRequest ?? ''} | ${r.serverCpuUsOverJwt === null ? '' : (r.serverCpuUsOverJwt > 0 ? '+' : '') + r.serverCpuUsOverJwt.toFixed(2)} | ${r.serverCpuBusy === null ? '' : `${Math.round(r.serverCpuBusy * 100)}%`} | ${r.description} |`)
  }
  if (result.inProcess !== null) {
    const p = result.inProcess
    lines.push('')
    lines.push('In-process hit cost (mitata, mean ns/op):')
    lines.push('')
    lines.push('| operation | ns/op | vs lookup |')
    lines.push('|---|---:|---:|')
    lines.push(`| app.authz.lookup(handle, id, userId) | ${p.lookupNs} | 1.00 |`)
    lines.push(`| await Promise.resolve(lookup(...)) (promise floor) | ${p.promiseFloorNs} | ${(p.promiseFloorNs / p.lookupNs).toFixed(2)} |`)
    lines.push(`| await app.authz.getOrLoad(handle, userId, id) | ${p.getOrLoadNs} | ${(p.getOrLoadNs / p.lookupNs).toFixed(2)} |`)
    lines.push(`| await request.authz.generationAccess(id) | ${p.requestAuthzNs} | ${p.ratio.toFixed(2)} |`)
  }
  lines.push('')
  lines.push('Targets:')
  for (const t of result.targets) lines.push(`- [${t.pass === null ? 'SKIP' : t.pass ? 'PASS' : 'FAIL'}] ${t.name}: ${t.detail}`)
  if (result.notes.length > 0) {
    lines.push('')
    lines.push('Notes:')
    for (const note of result.notes) lines.push(`- ${note}`)
  }
  return lines.join('\n')
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      rounds: { type: 'string' },
      connections: { type: 'string' },
      pipelining: { type: 'string' },
      ids: { type: 'string' },
      scenarios: { type: 'string' },
      'no-in-process': { type: 'boolean' },
      json: { type: 'boolean' }
    }
  })
  const env = process.env
  const result = await run({
    duration: numberOption(values.duration, env.BENCH_DURATION, 3, 'duration', 1),
    warmup: numberOption(values.warmup, env.BENCH_WARMUP, 1, 'warmup', 0),
    rounds: Math.floor(numberOption(values.rounds, env.BENCH_ROUNDS, 5, 'rounds', 1)),
    connections: Math.floor(numberOption(values.connections, env.BENCH_CONNECTIONS, 50, 'connections', 1)),
    pipelining: Math.floor(numberOption(values.pipelining, undefined, 1, 'pipelining', 1)),
    ids: Math.floor(numberOption(values.ids, undefined, DEFAULT_IDS, 'ids', 1)),
    scenarios: values.scenarios === undefined ? undefined : values.scenarios.split(',').map((name) => name.trim()) as Scenario[],
    inProcess: values['no-in-process'] !== true,
    log: (line) => console.error(line)
  })
  if (values.json !== true) {
    console.log(formatTable(result))
    console.log('')
  }
  console.log(JSON.stringify(result, null, 2))
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
}
