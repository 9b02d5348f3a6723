/**
 * Redis benchmark: invalidation propagation between two instances, and the
 * cost of a check served from L2.
 *
 *   npm run build && node dist/bench/redis.js
 *
 * `run()` returns every number as a JSON-able object (bench/run.ts writes
 * BENCHMARKS.md from it); run directly, the file prints a table and the JSON.
 * Without a reachable Redis (REDIS_URL, default redis://127.0.0.1:6379) the
 * result is `{ skipped: 'reason' }`. Every run uses a key prefix and channel
 * of its own and deletes its keys at the end.
 *
 * Instances. A and B are each a real plugin instance: a Fastify app with
 * `@fastify/jwt` and the plugin, `redis: { url, keyPrefix, channel }`,
 * preset `production`, logger off.
 *
 * 1. Propagation. Sequential rounds, one user per round. Before each round
 *    (not timed) B loads a decision for the user through `getOrLoad`, so it
 *    is in B's L1 and in L2 (value and tag set) and the invalidation has
 *    something to remove everywhere. The clock starts just before A calls
 *    `await app.authz.invalidateUserAuthorizationCache(userId)` and stops
 *    when B's engine calls `observer.invalidated(request, removed, 'remote')`
 *    for that user, i.e. after B applied it (the plugin's own observer, the
 *    logging call, is kept and called after the timestamp). The latency is
 *    also split where A issues its PUBLISH (a timestamp taken by a shadowing
 *    `Redis.prototype.publish` in A's process, see `watchPublish`): before
 *    it, A's local apply; from it, the one Lua script (bump the sequence, mark
 *    the tags, delete the sets and values, PUBLISH), Redis fan-out and B's
 *    apply. Each round also times a "bus floor":
 *    the harness PUBLISHes the same message itself on its own connection (no
 *    sequence bump, no L2 deletion), so the difference is what the plugin does before
 *    it publishes. Rounds alternate the two, so noise from other processes
 *    falls on both alike. A round B has not applied within 1 s is counted
 *    as lost, not as a latency.
 *    - Primary: B runs in a child process, so A's and B's event loops are
 *      independent, as two instances are. Timestamps are
 *      `process.hrtime.bigint()` in both processes: on Linux (and macOS,
 *      Windows) it reads the system-wide monotonic clock, so the parent's
 *      start and the child's stop are on one clock and subtract directly (no
 *      round-trip halving, no wall-clock mapping). This is checked before
 *      the rounds: for each of 50 IPC pings the child's timestamp must fall
 *      between the parent's send and receive.
 *    - Also: B in the same process as A (one event loop serves both).
 * 2. Cost per check on B (same process as A, which is idle by then), timed
 *    around `await b.app.authz.getOrLoad('generation', userId, id)` with
 *    `performance.now()`:
 *    - L2 hit: A loaded `ids` decisions, so they are in L2; B's L1 is
 *      emptied before each pass with `b.app.authz.apply({ all: true },
 *      'remote')` (local only, nothing published) and each id is read once
 *      per pass (shuffled): one MGET of the epoch and the value, a decode,
 *      and the L1 store. B's resolver must not be called (checked), and B's
 *      `l2Hits` counter must grow by one per check (checked).
 *    - L1 hit: the same ids again, now in B's L1.
 *    - Full miss: ids in neither: MGET (miss), B's resolver with a simulated
 *      backend of `backendMs` (a timer), then the L2 write (Lua
 *      compare-and-set) before the answer.
 *    - The resolver alone, no cache: what every check would cost without one.
 */
import os from 'node:os'
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { Redis } from 'ioredis'
import { READ_SCRIPT, READ_SHA } from '../lib/redis-scripts.js'
import authzCache from '../lib/index.js'
import type { Decision, InvalidationRequest, RedisStats, Resolver } from '../lib/index.js'

// ------------------------------------------------------------------ types

/** A distribution of samples, in the unit named by `unit`. */
export interface Distribution {
  unit: 'ms' | 'us'
  n: number
  min: number
  p50: number
  p90: number
  p99: number
  max: number
  mean: number
}

export interface PropagationResult {
  /** Where B ran. */
  mode: 'child-process' | 'same-process'
  description: string
  /** Measured rounds (after `warmupRounds` not counted). */
  rounds: number
  warmupRounds: number
  /** From just before A's `await invalidateUserAuthorizationCache(userId)` to B's `observer.invalidated(..., 'remote')`. */
  latencyMs: Distribution
  /** How long A's `await invalidateUserAuthorizationCache()` took (local apply, then one Lua script that also publishes, then every instance's acknowledgement). */
  callMs: Distribution
  /** Part of `latencyMs` before A issues the script that publishes: the local apply. */
  beforePublishMs: Distribution
  /** Part of `latencyMs` from A issuing its PUBLISH to B's `observer.invalidated`. */
  publishToAppliedMs: Distribution
  /** The bus floor: from just before a raw PUBLISH of the same message to B's `observer.invalidated`. */
  busFloorMs: Distribution
  /** Rounds in which B did not apply the invalidation within `lostAfterMs` (not in the latencies). */
  lost: number
  lostAfterMs: number
  /** Rounds in which B's apply removed something other than the one entry prepared for it. */
  unexpectedRemovals: number
  meetsTarget: boolean
}

export interface ClockCheck {
  source: string
  /** IPC pings whose child timestamp fell between the parent's send and receive. */
  pings: number
  violations: number
  ipcRoundTripUs: Distribution
}

export interface CheckCostResult {
  /** Distinct ids loaded into L2 by A, each read once per pass by B. */
  ids: number
  passes: number
  /** Size of one decision as JSON, in bytes. */
  decisionBytes: number
  backendMs: number
  /** `getOrLoad` on an id in L2 only (B's L1 empty). */
  l2HitUs: Distribution
  /** `getOrLoad` on an id already in B's L1. */
  l1HitUs: Distribution
  /**
   * The Redis round trip of one L2 read alone, on the same keys, side by
   * side: the read script (validate on read: the value's start sequence
   * against the key, namespace and tag marks) and the read it replaced (one
   * MGET of the sequence and the value, no validation).
   */
  readScriptUs: Distribution
  previousMgetUs: Distribution
  /** Mean of the L1 hits timed as one batch (no per-call timer around each). */
  l1HitBatchMeanUs: number
  /** `getOrLoad` on an id in neither: L2 miss, resolver with a `backendMs` backend, L2 write. */
  fullMissUs: Distribution
  /** The same resolver called directly: every check without a cache. */
  resolverOnlyUs: Distribution
  /** B's `l2Hits` grew by this much over the L2 passes (should equal ids × passes). */
  l2HitsCounted: number
  /** B's resolver calls during the L2 and L1 passes (should be 0). */
  resolverCallsDuringHits: number
}

export interface RedisBenchOk {
  skipped?: undefined
  date: string
  node: string
  cpus: number
  cpuModel: string
  /** 1-minute load average when the run began: above the core count, other processes shared the CPUs. */
  loadAverage1m: number
  redisUrl: string
  redisVersion: string
  targetP99Ms: number
  /** The propagation result for the record: B in a child process when it ran, else B in the same process. */
  propagation: PropagationResult
  propagationChild?: PropagationResult
  propagationSameProcess?: PropagationResult
  clock?: ClockCheck
  checks: CheckCostResult
  /** Keys under this run's prefix deleted at the end. */
  keysDeleted: number
  durationMs: number
}

export type RedisBenchResult = RedisBenchOk | { skipped: string }

export interface RedisBenchOptions {
  /** Default `process.env.REDIS_URL` or redis://127.0.0.1:6379. */
  url?: string
  /** Measured propagation rounds per mode. Default 1,000. */
  rounds?: number
  /** Rounds before those, not counted. Default 50. */
  warmupRounds?: number
  /** `child` (B in a child process), `same` (one process) or `both` (default). */
  mode?: 'child' | 'same' | 'both'
  /** Distinct ids in L2 for the L2-hit passes. Default 2,000. */
  ids?: number
  /** L2-hit passes (B's L1 emptied before each). Default 5. */
  passes?: number
  /** Samples of the full-miss and resolver-only paths. Default 300. */
  missSamples?: number
  /** Simulated backend time of the resolver, ms. Default 2. */
  backendMs?: number
  /** Progress lines (default: none). */
  log?: (line: string) => void
}

// ---------------------------------------------------------------- helpers

const TARGET_P99_MS = 5
const LOST_AFTER_MS = 1000
const CHILD_FLAG = '--authz-bench-redis-child'
const SECRET = 'bench-secret-that-is-long-enough-for-hs256'
const PREPARED_GENERATION = 'bench-generation'

function distribution (samples: number[], unit: 'ms' | 'us'): Distribution {
  const n = samples.length
  if (n === 0) return { unit, n, min: 0, p50: 0, p90: 0, p99: 0, max: 0, mean: 0 }
  const sorted = Float64Array.from(samples).sort()
  const at = (p: number): number => sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]
  const digits = unit === 'ms' ? 3 : 2
  const r = (v: number): number => Math.round(v * 10 ** digits) / 10 ** digits
  let sum = 0
  for (const v of samples) sum += v
  return { unit, n, min: r(sorted[0]), p50: r(at(50)), p90: r(at(90)), p99: r(at(99)), max: r(sorted[n - 1]), mean: r(sum / n) }
}

const nsToMs = (ns: bigint): number => Number(ns) / 1e6

function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const tmp = items[i]
    items[i] = items[j]
    items[j] = tmp
  }
  return items
}

function redact (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return '(unparsable url)'
  }
}

function decisionFor (id: string): Decision {
  return { granted: true, access: ['read', 'write'], projectId: `project-${id}`, ownerId: 'owner-0001' }
}

interface Namespace { url: string, keyPrefix: string, channel: string }

async function buildInstance (ns: Namespace, resolver: Resolver): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(authzCache, {
    preset: 'production',
    resolvers: { generation: resolver },
    redis: { url: ns.url, keyPrefix: ns.keyPrefix, channel: ns.channel }
  })
  await app.ready()
  // register waits at most 1 s for the bus; a benchmark wants it up.
  const until = Date.now() + 5000
  while (app.authz.busIsDown) {
    if (Date.now() > until) throw new Error('the invalidation bus did not come up within 5 s')
    await sleep(5)
  }
  return app
}

/** Chains the engine's `observer.invalidated`: timestamp first, then the plugin's logging call, then `listener` for remote ones. */
function onRemoteApplied (app: FastifyInstance, listener: (request: InvalidationRequest, removed: number, at: bigint) => void): void {
  const observer = app.authz.observer
  const logged = observer.invalidated
  observer.invalidated = function invalidated (request, removed, origin) {
    const at = process.hrtime.bigint()
    logged?.call(observer, request, removed, origin)
    if (origin === 'remote') listener(request, removed, at)
  }
}

async function redisStats (app: FastifyInstance): Promise<RedisStats> {
  const token = app.jwt.sign({ sub: 'bench-admin', scope: 'authz:admin' })
  const res = await app.inject({ url: '/_authz/stats', headers: { authorization: `Bearer ${token}` } })
  if (res.statusCode !== 200) throw new Error(`stats answered ${res.statusCode}: ${res.body}`)
  return (res.json() as { redis: RedisStats }).redis
}

async function probe (url: string): Promise<{ version: string } | { error: string }> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, connectTimeout: 1000, retryStrategy: () => null })
  let cause: Error | undefined
  client.on('error', (error: Error) => { cause ??= error })
  try {
    await client.connect()
    await client.ping()
    const info = await client.info('server')
    return { version: /redis_version:([^\r\n]+)/.exec(info)?.[1] ?? 'unknown' }
  } catch (error) {
    return { error: (cause ?? error as Error).message }
  } finally {
    client.disconnect()
  }
}

// ---------------------------------------------------------- instance B

/** Instance B as the propagation rounds drive it, wherever it runs. */
interface RemoteB {
  /** Loads the decision of `userId` on B (B's L1 and L2), untimed. */
  prepare (userId: string): Promise<void>
  /** Resolves with B's timestamp when B applied a remote invalidation of `userId`, or undefined after `ms`. Call before invalidating. */
  expectApplied (userId: string, ms: number): Promise<{ at: bigint, removed: number } | undefined>
  close (): Promise<void>
}

/** One pending expectation at a time: rounds are sequential. */
class Expectation {
  #pending: { userId: string, resolve: (v: { at: bigint, removed: number } | undefined) => void, timer: NodeJS.Timeout } | undefined

  expect (userId: string, ms: number): Promise<{ at: bigint, removed: number } | undefined> {
    if (this.#pending !== undefined) throw new Error('an expectation is already pending')
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending = undefined
        resolve(undefined)
      }, ms)
      this.#pending = { userId, resolve, timer }
    })
  }

  applied (userId: string | undefined, at: bigint, removed: number): void {
    const pending = this.#pending
    if (pending === undefined || pending.userId !== userId) return
    this.#pending = undefined
    clearTimeout(pending.timer)
    pending.resolve({ at, removed })
  }
}

async function localB (ns: Namespace, app?: FastifyInstance): Promise<RemoteB & { app: FastifyInstance }> {
  const b = app ?? await buildInstance(ns, ({ id }) => decisionFor(id))
  const expectation = new Expectation()
  onRemoteApplied(b, (request, removed, at) => expectation.applied(request.userId, at, removed))
  return {
    app: b,
    async prepare (userId) {
      // An instant resolver for the untimed preparation, whatever B's own resolver costs.
      await b.authz.getOrLoad('generation', userId, PREPARED_GENERATION, { resolver: ({ id }) => decisionFor(id) })
      if (!b.authz.getGenerationAccess(PREPARED_GENERATION, userId).hit) throw new Error('B did not keep the prepared entry in L1')
    },
    expectApplied: (userId, ms) => expectation.expect(userId, ms),
    close: async () => { await b.close() }
  }
}

type ToChild = { type: 'prepare', userId: string } | { type: 'ping' } | { type: 'close' }
type FromChild =
  | { type: 'ready' }
  | { type: 'prepared', userId: string, ok: boolean }
  | { type: 'applied', userId: string | undefined, at: bigint, removed: number }
  | { type: 'pong', at: bigint }
  | { type: 'error', message: string }

class ChildB implements RemoteB {
  readonly #child: ChildProcess
  readonly #expectation = new Expectation()
  #reply: ((message: FromChild) => void) | undefined
  #exited: Error | undefined

  private constructor (child: ChildProcess) {
    this.#child = child
    child.on('message', (message: FromChild) => {
      if (message.type === 'applied') {
        this.#expectation.applied(message.userId, message.at, message.removed)
        return
      }
      const reply = this.#reply
      this.#reply = undefined
      reply?.(message)
    })
    child.on('exit', (code, signal) => {
      this.#exited = new Error(`B's process exited (${signal ?? code})`)
      const reply = this.#reply
      this.#reply = undefined
      reply?.({ type: 'error', message: this.#exited.message })
    })
  }

  static async start (ns: Namespace): Promise<ChildB> {
    const child = fork(fileURLToPath(import.meta.url), [CHILD_FLAG, JSON.stringify(ns)], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })
    const b = new ChildB(child)
    const first = await b.#next(undefined, 15_000)
    if (first.type !== 'ready') {
      child.kill()
      throw new Error(`B's process did not start: ${first.type === 'error' ? first.message : first.type}`)
    }
    return b
  }

  #next (message: ToChild | undefined, ms = 5000): Promise<FromChild> {
    if (this.#exited !== undefined) return Promise.reject(this.#exited)
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#reply = undefined
        resolve({ type: 'error', message: `no answer from B's process within ${ms} ms` })
      }, ms)
      this.#reply = (reply) => {
        clearTimeout(timer)
        resolve(reply)
      }
      if (message !== undefined) this.#child.send(message)
    })
  }

  async prepare (userId: string): Promise<void> {
    const reply = await this.#next({ type: 'prepare', userId })
    if (reply.type !== 'prepared' || !reply.ok) throw new Error(`B could not prepare ${userId}: ${reply.type === 'error' ? reply.message : JSON.stringify(reply)}`)
  }

  expectApplied (userId: string, ms: number): Promise<{ at: bigint, removed: number } | undefined> {
    return this.#expectation.expect(userId, ms)
  }

  /** IPC pings: the child's hrtime must fall between the parent's send and receive if both read one clock. */
  async clockCheck (pings: number): Promise<ClockCheck> {
    let violations = 0
    const rtt: number[] = []
    for (let i = 0; i < pings; i++) {
      const sent = process.hrtime.bigint()
      const reply = await this.#next({ type: 'ping' })
      const received = process.hrtime.bigint()
      if (reply.type !== 'pong') throw new Error(`clock check: ${reply.type === 'error' ? reply.message : reply.type}`)
      if (reply.at < sent || reply.at > received) violations++
      rtt.push(Number(received - sent) / 1e3)
    }
    return {
      source: 'process.hrtime.bigint() in both processes (CLOCK_MONOTONIC, one system-wide clock)',
      pings,
      violations,
      ipcRoundTripUs: distribution(rtt, 'us')
    }
  }

  async close (): Promise<void> {
    if (this.#exited !== undefined) return
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()))
    this.#child.send({ type: 'close' } satisfies ToChild)
    const timer = setTimeout(() => this.#child.kill(), 5000)
    await exited
    clearTimeout(timer)
  }
}

/** The child process: instance B, driven over IPC. */
async function childMain (ns: Namespace): Promise<void> {
  const send = (message: FromChild): void => { process.send?.(message) }
  let app: FastifyInstance
  try {
    app = await buildInstance(ns, ({ id }) => decisionFor(id))
  } catch (error) {
    send({ type: 'error', message: (error as Error).message })
    process.disconnect?.()
    return
  }
  onRemoteApplied(app, (request, removed, at) => send({ type: 'applied', userId: request.userId, at, removed }))
  let closing = false
  const close = async (): Promise<void> => {
    if (closing) return
    closing = true
    await app.close()
    process.disconnect?.()
  }
  process.on('disconnect', () => { close().catch(() => process.exit(1)) })
  process.on('message', (message: ToChild) => {
    if (message.type === 'ping') {
      send({ type: 'pong', at: process.hrtime.bigint() })
    } else if (message.type === 'prepare') {
      app.authz.getOrLoad('generation', message.userId, PREPARED_GENERATION).then(
        () => send({ type: 'prepared', userId: message.userId, ok: app.authz.getGenerationAccess(PREPARED_GENERATION, message.userId).hit }),
        (error: Error) => send({ type: 'error', message: error.message }))
    } else if (message.type === 'close') {
      close().catch(() => process.exit(1))
    }
  })
  send({ type: 'ready' })
}

// ------------------------------------------------------- measurements

/**
 * Records when this process issues a PUBLISH on the plugin's channel. ioredis
 * defines its commands on the prototype chain of `Redis`; a method on
 * `Redis.prototype` shadows it for every client of this process (A's
 * included), until `restore()`. Only a timestamp is added to the call.
 */
function watchPublish (channel: string): { last: () => bigint | undefined, restore: () => void } {
  // The plugin publishes a tag or user invalidation from inside its Lua script
  // (EVALSHA, or EVAL the first time; their Buffer forms): any of
  // these commands carrying the channel is "A issues its publish".
  const proto = Redis.prototype as unknown as Record<string, (...args: unknown[]) => unknown>
  let last: bigint | undefined
  const restores: Array<() => void> = []
  for (const name of ['publish', 'evalsha', 'eval', 'evalshaBuffer', 'evalBuffer']) {
    const had = Object.prototype.hasOwnProperty.call(proto, name)
    const original = proto[name]
    proto[name] = function (this: unknown, ...args: unknown[]) {
      if (args.includes(channel)) last = process.hrtime.bigint()
      return original.apply(this, args)
    }
    restores.push(() => {
      if (had) proto[name] = original
      else delete proto[name]
    })
  }
  return {
    last: () => {
      const at = last
      last = undefined
      return at
    },
    restore: () => { for (const restore of restores) restore() }
  }
}

async function propagation (
  mode: PropagationResult['mode'],
  a: FastifyInstance,
  b: RemoteB,
  publisher: Redis,
  ns: Namespace,
  tag: string,
  rounds: number,
  warmupRounds: number
): Promise<PropagationResult> {
  const latency: number[] = []
  const beforePublish: number[] = []
  const afterPublish: number[] = []
  const call: number[] = []
  const floor: number[] = []
  let lost = 0
  let unexpectedRemovals = 0
  const published = watchPublish(ns.channel)
  try {
    for (let i = 0; i < warmupRounds + rounds; i++) {
      const counted = i >= warmupRounds
      // Alternate which path goes first, so neither always follows the other.
      const order = i % 2 === 0 ? ['plugin', 'floor'] : ['floor', 'plugin']
      for (const path of order) {
        const userId = `${tag}-${mode}-${path}-u${i}`
        await b.prepare(userId)
        const applied = b.expectApplied(userId, LOST_AFTER_MS)
        let start: bigint
        let publishedAt: bigint | undefined
        published.last()
        if (path === 'plugin') {
          start = process.hrtime.bigint()
          await a.authz.invalidateUserAuthorizationCache(userId)
          const returned = process.hrtime.bigint()
          publishedAt = published.last()
          if (counted) call.push(nsToMs(returned - start))
        } else {
          const message = JSON.stringify({ from: 'bench-bus-floor', request: { userId } })
          start = process.hrtime.bigint()
          await publisher.publish(ns.channel, message)
        }
        const result = await applied
        if (!counted) continue
        if (result === undefined) {
          lost++
          continue
        }
        if (result.removed !== 1) unexpectedRemovals++
        if (path === 'plugin') {
          latency.push(nsToMs(result.at - start))
          if (publishedAt !== undefined) {
            beforePublish.push(nsToMs(publishedAt - start))
            afterPublish.push(nsToMs(result.at - publishedAt))
          }
        } else {
          floor.push(nsToMs(result.at - start))
        }
      }
    }
  } finally {
    published.restore()
  }
  const latencyMs = distribution(latency, 'ms')
  return {
    mode,
    description: mode === 'child-process'
      ? 'B in a child process (independent event loops); A and the harness in the parent'
      : 'A, B and the harness in one process (one event loop)',
    rounds,
    warmupRounds,
    latencyMs,
    beforePublishMs: distribution(beforePublish, 'ms'),
    publishToAppliedMs: distribution(afterPublish, 'ms'),
    callMs: distribution(call, 'ms'),
    busFloorMs: distribution(floor, 'ms'),
    lost,
    lostAfterMs: LOST_AFTER_MS,
    unexpectedRemovals,
    meetsTarget: lost === 0 && latencyMs.n > 0 && latencyMs.p99 < TARGET_P99_MS
  }
}

async function pool<T> (items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++])
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker))
}

async function checkCosts (a: FastifyInstance, b: FastifyInstance, bResolverCalls: () => number, backend: Resolver, tag: string, o: Required<Pick<RedisBenchOptions, 'ids' | 'passes' | 'missSamples' | 'backendMs'>>, raw: Redis, keyPrefix: string): Promise<CheckCostResult> {
  const userId = `${tag}-reader`
  const ids = Array.from({ length: o.ids }, (_, i) => `${tag}-g${i}`)
  const warmIds = Array.from({ length: Math.min(200, o.ids) }, (_, i) => `${tag}-warm${i}`)
  // A loads every decision once: it is in A's L1 and in L2.
  await pool([...warmIds, ...ids], 32, async (id) => { await a.authz.getOrLoad('generation', userId, id) })

  const timeEach = async (list: string[], into: number[] | undefined): Promise<void> => {
    for (const id of list) {
      const start = performance.now()
      const decision = await b.authz.getOrLoad('generation', userId, id)
      const took = performance.now() - start
      if (decision.granted !== true) throw new Error(`unexpected decision for ${id}`)
      into?.push(took * 1000)
    }
  }
  const emptyL1 = (): void => {
    b.authz.apply({ all: true }, 'remote')
    if (b.authz.getStats().totalEntries !== 0) throw new Error('B\'s L1 is not empty')
  }

  // Warm-up of both paths, not counted.
  emptyL1()
  await timeEach(warmIds, undefined)
  await timeEach(warmIds, undefined)

  const callsBefore = bResolverCalls()
  const hitsBefore = (await redisStats(b)).l2Hits
  const l2: number[] = []
  const l1: number[] = []
  let batchNs = 0n
  let batchCalls = 0
  for (let pass = 0; pass < o.passes; pass++) {
    emptyL1()
    await timeEach(shuffle([...ids]), l2)
    await timeEach(shuffle([...ids]), l1)
    const order = shuffle([...ids])
    const start = process.hrtime.bigint()
    for (const id of order) await b.authz.getOrLoad('generation', userId, id)
    batchNs += process.hrtime.bigint() - start
    batchCalls += order.length
  }
  const l2HitsCounted = (await redisStats(b)).l2Hits - hitsBefore
  const resolverCallsDuringHits = bResolverCalls() - callsBefore

  // The read's Redis round trip alone, both protocols on the same keys, alternating.
  const script: number[] = []
  const mget: number[] = []
  const client = raw as unknown as { evalshaBuffer: (...args: unknown[]) => Promise<unknown>, evalBuffer: (...args: unknown[]) => Promise<unknown> }
  await client.evalBuffer(READ_SCRIPT, 5, `${keyPrefix}boot`, `${keyPrefix}seq`, `${keyPrefix}g`, `${keyPrefix}v:x`, `${keyPrefix}k:x`, `${keyPrefix}e:`, '0', 'bench')
  for (const [i, id] of shuffle([...ids]).entries()) {
    const key = `auth:gen:${id}:user:${userId}:access`
    const viaScript = async (): Promise<void> => {
      const start = process.hrtime.bigint()
      const reply = await client.evalshaBuffer(READ_SHA, 5, `${keyPrefix}boot`, `${keyPrefix}seq`, `${keyPrefix}g`, `${keyPrefix}v:${key}`, `${keyPrefix}k:${key}`, `${keyPrefix}e:`, '0', 'bench') as unknown[]
      script.push(Number(process.hrtime.bigint() - start) / 1000)
      if (reply.length !== 3) throw new Error(`the read script refused ${key}`)
    }
    const viaMget = async (): Promise<void> => {
      const start = process.hrtime.bigint()
      await raw.mgetBuffer(`${keyPrefix}seq`, `${keyPrefix}v:${key}`)
      mget.push(Number(process.hrtime.bigint() - start) / 1000)
    }
    if (i % 2 === 0) { await viaScript(); await viaMget() } else { await viaMget(); await viaScript() }
  }

  const miss: number[] = []
  const only: number[] = []
  const controller = new AbortController()
  for (let i = 0; i < o.missSamples; i++) {
    await timeEach([`${tag}-miss${i}`], miss)
    const start = performance.now()
    await backend({ kind: 'generation', userId, id: `${tag}-direct${i}`, signal: controller.signal })
    only.push((performance.now() - start) * 1000)
  }

  return {
    ids: o.ids,
    passes: o.passes,
    decisionBytes: Buffer.byteLength(JSON.stringify(decisionFor(ids[0]))),
    backendMs: o.backendMs,
    l2HitUs: distribution(l2, 'us'),
    l1HitUs: distribution(l1, 'us'),
    readScriptUs: distribution(script, 'us'),
    previousMgetUs: distribution(mget, 'us'),
    l1HitBatchMeanUs: Math.round(Number(batchNs) / batchCalls) / 1000,
    fullMissUs: distribution(miss, 'us'),
    resolverOnlyUs: distribution(only, 'us'),
    l2HitsCounted,
    resolverCallsDuringHits
  }
}

async function deleteKeys (client: Redis, keyPrefix: string): Promise<number> {
  let deleted = 0
  let cursor = '0'
  const match = `${keyPrefix.replace(/[*?[\]\\]/g, '\\$&')}*`
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', match, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) deleted += await client.del(...keys)
  } while (cursor !== '0')
  return deleted
}

// ----------------------------------------------------------------- run

export async function run (options: RedisBenchOptions = {}): Promise<RedisBenchResult> {
  const url = options.url ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const log = options.log ?? (() => {})
  const rounds = options.rounds ?? 1000
  const warmupRounds = options.warmupRounds ?? 50
  const mode = options.mode ?? 'both'
  const o = { ids: options.ids ?? 2000, passes: options.passes ?? 5, missSamples: options.missSamples ?? 300, backendMs: options.backendMs ?? 2 }

  const reachable = await probe(url)
  if ('error' in reachable) return { skipped: `no Redis at ${redact(url)}: ${reachable.error}` }

  const began = performance.now()
  const date = new Date().toISOString()
  const loadAverage1m = Math.round(os.loadavg()[0] * 100) / 100
  const id = randomUUID()
  const tag = id.slice(0, 8)
  const ns: Namespace = { url, keyPrefix: `authz-bench:${id}:`, channel: `authz-bench:${id}:bus` }
  const raw = new Redis(url, { maxRetriesPerRequest: 1 })
  raw.on('error', () => {})
  const closers: Array<() => Promise<unknown>> = []
  let keysDeleted = 0
  try {
    const a = await buildInstance(ns, ({ id }) => decisionFor(id))
    closers.push(() => a.close())

    let propagationChild: PropagationResult | undefined
    let clock: ClockCheck | undefined
    if (mode !== 'same') {
      log('propagation: starting B in a child process')
      const child = await ChildB.start(ns)
      closers.push(() => child.close())
      clock = await child.clockCheck(50)
      if (clock.violations > 0) log(`clock check: ${clock.violations} of ${clock.pings} child timestamps outside the parent's send..receive window`)
      log(`propagation (child process): ${warmupRounds} + ${rounds} rounds`)
      propagationChild = await propagation('child-process', a, child, raw, ns, tag, rounds, warmupRounds)
      await child.close()
    }

    // B in this process: the same-process propagation rounds and the check costs.
    let resolverCalls = 0
    const backend: Resolver = async ({ id }) => {
      await sleep(o.backendMs)
      return decisionFor(id)
    }
    const bApp = await buildInstance(ns, async (ctx) => {
      resolverCalls++
      return backend(ctx)
    })
    closers.push(() => bApp.close())
    let propagationSameProcess: PropagationResult | undefined
    if (mode !== 'child') {
      log(`propagation (same process): ${warmupRounds} + ${rounds} rounds`)
      const b = await localB(ns, bApp)
      propagationSameProcess = await propagation('same-process', a, b, raw, ns, tag, rounds, warmupRounds)
    }

    log(`check costs: ${o.ids} ids x ${o.passes} passes from L2, ${o.missSamples} full misses`)
    const checks = await checkCosts(a, bApp, () => resolverCalls, backend, tag, o, raw, ns.keyPrefix)

    const primary = propagationChild ?? propagationSameProcess
    if (primary === undefined) throw new Error('no propagation mode ran')
    for (const close of closers.splice(0).reverse()) await close()
    keysDeleted = await deleteKeys(raw, ns.keyPrefix)
    return {
      date,
      node: process.version,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      loadAverage1m,
      redisUrl: redact(url),
      redisVersion: reachable.version,
      targetP99Ms: TARGET_P99_MS,
      propagation: primary,
      propagationChild,
      propagationSameProcess,
      clock,
      checks,
      keysDeleted,
      durationMs: Math.round(performance.now() - began)
    }
  } finally {
    for (const close of closers.reverse()) await close().catch(() => {})
    await deleteKeys(raw, ns.keyPrefix).catch(() => 0)
    await raw.quit().catch(() => raw.disconnect())
  }
}

// -------------------------------------------------------------- output

function fmt (v: number, digits: number): string {
  return v.toFixed(digits)
}

export function formatResult (r: RedisBenchResult): string {
  if (r.skipped !== undefined) return `Redis benchmark skipped: ${r.skipped}`
  const lines: string[] = []
  const pad = (s: string, n: number): string => s.padEnd(n)
  const row = (label: string, d: Distribution, digits: number): string =>
    `  ${pad(label, 52)}${[d.p50, d.p90, d.p99, d.max].map((v) => fmt(v, digits).padStart(9)).join('')}${String(d.n).padStart(7)}`
  lines.push(`Redis ${r.redisVersion} at ${r.redisUrl}; node ${r.node}; ${r.cpus} x ${r.cpuModel}; load average ${r.loadAverage1m} at start; ${r.date}`)
  lines.push('')
  for (const p of [r.propagationChild, r.propagationSameProcess]) {
    if (p === undefined) continue
    lines.push(`Invalidation propagation A -> B, ${p.mode}: ${p.description}`)
    lines.push(`  ${p.rounds} sequential invalidations after ${p.warmupRounds} warm-up; B held the user's entry (L1 and L2) each round`)
    lines.push(`  ${pad('ms', 52)}${['p50', 'p90', 'p99', 'max'].map((h) => h.padStart(9)).join('')}${'n'.padStart(7)}`)
    lines.push(row('A invalidateUserAuthorizationCache() -> B applied', p.latencyMs, 3))
    lines.push(row('  of which: call -> A issues PUBLISH', p.beforePublishMs, 3))
    lines.push(row('  of which: A issues PUBLISH -> B applied', p.publishToAppliedMs, 3))
    lines.push(row('A\'s await (local apply, Lua script, every ack)', p.callMs, 3))
    lines.push(row('bus floor: raw PUBLISH -> B applied', p.busFloorMs, 3))
    lines.push(`  lost (not applied within ${p.lostAfterMs} ms): ${p.lost}; rounds removing other than 1 entry on B: ${p.unexpectedRemovals}`)
    lines.push(`  p99 < ${r.targetP99Ms} ms: ${p.meetsTarget ? 'yes' : 'NO'} (${fmt(p.latencyMs.p99, 3)} ms)`)
    lines.push('')
  }
  if (r.clock !== undefined) {
    lines.push(`Clock: ${r.clock.source}; ${r.clock.pings - r.clock.violations}/${r.clock.pings} IPC pings consistent; IPC round trip p50 ${fmt(r.clock.ipcRoundTripUs.p50, 1)} us`)
    lines.push('')
  }
  const c = r.checks
  lines.push(`Cost per check on B: await getOrLoad('generation', userId, id); decision ${c.decisionBytes} B of JSON`)
  lines.push(`  ${pad('us', 52)}${['p50', 'p90', 'p99', 'max'].map((h) => h.padStart(9)).join('')}${'n'.padStart(7)}`)
  lines.push(row('L1 hit', c.l1HitUs, 2))
  lines.push(row(`L2 hit (L1 empty; ${c.ids} ids x ${c.passes} passes)`, c.l2HitUs, 2))
  lines.push(row('  Redis round trip: read script (validate on read)', c.readScriptUs, 2))
  lines.push(row('  Redis round trip: the MGET it replaced', c.previousMgetUs, 2))
  lines.push(row(`full miss: L2 miss + ${c.backendMs} ms resolver + L2 write`, c.fullMissUs, 2))
  lines.push(row(`no cache: the ${c.backendMs} ms resolver alone`, c.resolverOnlyUs, 2))
  lines.push(`  L1 hit timed as one batch: ${fmt(c.l1HitBatchMeanUs, 3)} us mean per check`)
  lines.push(`  L2 hit / L1 hit (p50): ${fmt(c.l2HitUs.p50 / c.l1HitUs.p50, 0)}x; no cache / L2 hit (p50): ${fmt(c.resolverOnlyUs.p50 / c.l2HitUs.p50, 1)}x`)
  lines.push(`  read script / previous MGET (p50, side by side): ${fmt(c.readScriptUs.p50 / c.previousMgetUs.p50, 2)}x; L2 hit p50 ${fmt(c.l2HitUs.p50 / 1000, 3)} ms (target: <= 1.5 x 0.13 ms = 0.195 ms)`)
  lines.push(`  checks: B's l2Hits grew by ${c.l2HitsCounted} (expected ${c.ids * c.passes}); B's resolver calls during hit passes: ${c.resolverCallsDuringHits}`)
  lines.push('')
  lines.push(`${r.keysDeleted} keys deleted; ${(r.durationMs / 1000).toFixed(1)} s`)
  return lines.join('\n')
}

// ---------------------------------------------------------- entry point

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === CHILD_FLAG) {
    childMain(JSON.parse(process.argv[3] ?? '{}') as Namespace).catch((error: Error) => {
      process.send?.({ type: 'error', message: error.message } satisfies FromChild)
      process.exitCode = 1
    })
  } else {
    run({ log: (line) => process.stderr.write(`${line}\n`) }).then((result) => {
      process.stdout.write(`${formatResult(result)}\n\n${JSON.stringify(result, null, 2)}\n`)
    }, (error: Error) => {
      process.stderr.write(`${error.stack ?? error.message}\n`)
      process.exitCode = 1
    })
  }
}
