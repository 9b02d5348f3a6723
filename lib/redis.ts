/**
 * Redis as L2 and as the invalidation bus (SPEC section 8). The protocol,
 * one mechanism per guarantee:
 *
 * - Validate on read (lib/redis-scripts.ts): an L2 value carries the
 *   sequence number its load started at and all its tags; one script reads
 *   it and refuses it when an invalidation touching it (its key, any tag, a
 *   pattern or `all`) came after. Deletes are only housekeeping.
 * - Fenced writes: a load's write is refused when such an invalidation came
 *   after its read; the engine then stores nothing and makes the callers
 *   that joined the load reload (lib/engine/loads.ts).
 * - Ordered delivery (lib/redis-outbox.ts): invalidations and direct writes
 *   go to Redis in order; one Redis did not take is retried until it is, and
 *   until then nothing is read from L2.
 * - Acknowledged, watched bus (lib/redis-bus.ts): the async invalidations
 *   resolve when every instance applied them, or after `ackTimeoutMs`; an
 *   instance that stops hearing its own heartbeat serves nothing older than
 *   the staleness bound and reads nothing from L2 until it hears it again.
 *
 * Outages: commands have short timeouts and no offline queue on the client
 * the plugin creates; an L2 error counts as a miss and never fails a request.
 */
import { randomUUID } from 'node:crypto'
import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { AuthzCache, SharedHandle, SharedLayer, SharedRead } from './cache.js'
import type { Delivery } from './engine/shared.js'
import { FST_AUTHZ_BUS_FAILED } from './errors.js'
import { collapseStars, compilePattern, invalidationTags } from './keys.js'
import type { ResolvedRedisOptions } from './options.js'
import { Bus, type BusClient } from './redis-bus.js'
import { Outbox } from './redis-outbox.js'
import { epochTtlMs, INVALIDATE_SCRIPT, INVALIDATE_SHA, READ_SCRIPT, READ_SHA, WRITE_SCRIPT, WRITE_SHA } from './redis-scripts.js'
import type { InvalidationRequest, RedisStats } from './types.js'

/** How long `register` waits for a first connection before going on with L1 and resolvers only. */
export const REDIS_BOOT_WAIT_MS = 1000
/** Entries a SCAN step asks for when a pattern or `all` reaches L2. */
export const SCAN_COUNT = 1000

const FORMAT_JSON = 0
const FORMAT_DEFLATE = 1
const NEWLINE = Buffer.from('\n')

/** The part of an ioredis client this layer uses; a client of ioredis 5 or 6 fits. */
interface RedisLike extends BusClient {
  duplicate (override?: Record<string, unknown>): RedisLike
  once (event: string, listener: (...args: any[]) => void): unknown
  evalBuffer (script: string, numKeys: number, ...args: Array<string | Buffer | number>): Promise<unknown>
  evalshaBuffer (sha: string, numKeys: number, ...args: Array<string | Buffer | number>): Promise<unknown>
  del (...keys: string[]): Promise<number>
  publish (channel: string, message: string): Promise<number>
  scan (cursor: string, ...args: Array<string | number>): Promise<[string, string[]]>
  quit (): Promise<unknown>
}

/** What the outbox delivers: an invalidation (with its bus message), or a direct write. */
type Op =
  | { type: 'invalidate', request: InvalidationRequest, message: { id: string, text: string } | undefined, receivers: number }
  | { type: 'replace', key: string, value: unknown, ttlMs: number, tags: string[] }

/**
 * Escapes a key pattern for Redis MATCH: only `*` stays a wildcard, and runs
 * of `*` are collapsed (Redis's own matcher backtracks on each of them).
 */
function redisGlob (pattern: string): string {
  return collapseStars(pattern).replace(/[?[\]\\]/g, '\\$&')
}

/** Escapes a literal (the key prefix) for Redis MATCH: nothing in it is a wildcard. */
function globLiteral (text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}

function withTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis command timed out after ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export interface RedisLayer {
  stats (): RedisStats
  close (): Promise<void>
}

class RedisShared implements SharedLayer, RedisLayer {
  readonly #engine: SharedHandle
  readonly #o: ResolvedRedisOptions
  readonly #log: FastifyBaseLogger
  readonly #client: RedisLike
  readonly #ownsClient: boolean
  readonly #bus: Bus | undefined
  readonly #outbox: Outbox<Op>
  readonly #k: { boot: string, seq: string, g: string, m: string }
  readonly #epochTtlMs: number
  readonly #compressAbove: number
  readonly #counters = { l2Hits: 0, l2Misses: 0, l2Errors: 0, published: 0, received: 0, outages: 0, refused: 0, ackTimeouts: 0 }
  #closing = false
  #warned = false

  constructor (engine: AuthzCache, o: ResolvedRedisOptions, log: FastifyBaseLogger) {
    // Attached first: the engine's handle is this layer's only way into the engine.
    this.#engine = engine.attachShared(this, { busOutageMaxStalenessSeconds: o.busOutageMaxStalenessSeconds })
    this.#o = o
    this.#log = log
    const p = o.keyPrefix
    this.#k = { boot: `${p}boot`, seq: `${p}seq`, g: `${p}g`, m: `${p}m` }
    this.#epochTtlMs = epochTtlMs(engine.options.loaderTimeoutMs)
    this.#compressAbove = engine.options.compressionEnabled ? engine.options.compressionThresholdBytes : Infinity
    if (o.client !== undefined) {
      this.#client = o.client as RedisLike
      this.#ownsClient = false
    } else {
      this.#client = new Redis(o.url as string, {
        // Fail fast instead of queueing: an L2 that is not there is a miss, not a wait.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        commandTimeout: o.commandTimeoutMs,
        connectTimeout: Math.max(1000, o.commandTimeoutMs * 4),
        retryStrategy: (times: number) => Math.min(times * 100, 2000)
      }) as unknown as RedisLike
      this.#ownsClient = true
      this.#client.on('error', this.#onError)
    }
    this.#outbox = new Outbox<Op>({
      run: async (op) => await this.#deliver(op),
      fold: () => ({ type: 'invalidate', request: { all: true }, message: this.#bus?.message({ all: true }), receivers: 0 }),
      stalled: (error, pending) => this.#log.error({ err: error, pending }, 'authz cache: Redis did not take an invalidation; applied here, queued, and retried in order; nothing is read from L2 until it is taken'),
      drained: () => this.#log.info('authz cache: Redis took every queued invalidation')
    })
    // A connection that comes back delivers what waits at once, not at the next backoff step.
    this.#client.on('ready', () => this.#outbox.retryNow())
    if (o.bus) {
      this.#engine.busDown()
      const sub = this.#client.duplicate({
        enableOfflineQueue: true,
        maxRetriesPerRequest: null,
        commandTimeout: undefined,
        retryStrategy: (times: number) => Math.min(times * 100, 2000)
      })
      this.#bus = new Bus(sub, o.channel, o.heartbeatMs, o.commandTimeoutMs, {
        publish: async (message) => await this.#command(this.#client.publish(o.channel, message)),
        apply: (request) => {
          this.#counters.received++
          this.#engine.apply(request as InvalidationRequest)
        },
        malformed: (error, bytes) => {
          // Fail safe: the message may have been a revocation, and a lost revocation is worse than a cold cache.
          this.#engine.apply({ all: true })
          this.#log.error({ err: error, bytes }, 'authz cache: malformed invalidation message on the bus; cleared this instance\'s L1 in case it was a revocation')
        },
        up: () => {
          this.#warned = false
          const dropped = this.#engine.busUp()
          if (dropped > 0) this.#log.info({ dropped }, 'authz cache: invalidation bus back; dropped L1 entries stored before it came back')
        },
        down: (reason) => {
          this.#counters.outages++
          this.#engine.busDown()
          this.#log.warn({ reason }, 'authz cache: invalidation bus %s; L1 entries older than %d s are not served and nothing is read from L2 until it is back',
            reason === 'closed' ? 'disconnected' : 'silent (own heartbeat not heard)', o.busOutageMaxStalenessSeconds)
        },
        error: this.#onError
      })
    }
  }

  /** Resolves once the command client is ready and the bus up, or after `ms`. */
  async waitReady (ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) })
    const ready = (async () => {
      if (this.#client.status !== 'ready') await new Promise<void>((resolve) => this.#client.once('ready', () => resolve()))
      await this.#bus?.waitUp()
    })()
    await Promise.race([ready, timeout])
    clearTimeout(timer)
  }

  readonly #onError = (error: Error): void => {
    if (!this.#warned && !this.#closing) {
      this.#warned = true
      this.#log.warn({ err: error }, 'authz cache: Redis unreachable; serving from L1 and resolvers until it is back')
    }
  }

  #command<T> (promise: Promise<T>): Promise<T> {
    return this.#ownsClient ? promise : withTimeout(promise, this.#o.commandTimeoutMs)
  }

  #valueKey (key: string): string {
    return `${this.#o.keyPrefix}v:${key}`
  }

  #keyMark (key: string): string {
    return `${this.#o.keyPrefix}k:${key}`
  }

  #tagKey (tag: string): string {
    return `${this.#o.keyPrefix}t:${tag}`
  }

  #epochKey (tag: string): string {
    return `${this.#o.keyPrefix}e:${tag}`
  }

  /**
   * L2 is read only while it can be trusted: the bus is up, no invalidation
   * waits in the outbox, and no other invalidation feed of the engine (the
   * PostgreSQL LISTEN connection) is down: a revocation it missed would
   * otherwise come back from L2 as a fresh entry, past the staleness bound.
   */
  get #trusted (): boolean {
    return this.#o.l2 && this.#outbox.pending === 0 && (this.#bus === undefined || this.#bus.up) && !this.#engine.outage
  }

  async read (key: string, fresh: boolean): Promise<SharedRead> {
    if (!this.#trusted) return { fence: null }
    try {
      const k = this.#k
      const reply = await this.#script(READ_SCRIPT, READ_SHA, [k.boot, k.seq, k.g, this.#valueKey(key), this.#keyMark(key)],
        [`${this.#o.keyPrefix}e:`, fresh ? '1' : '0', randomUUID()]) as [Buffer, number?, Buffer?]
      const fence = reply[0].toString()
      if (fresh) return { fence }
      const raw = reply[2]
      if (raw === undefined || raw.length < 2) {
        this.#counters.l2Misses++
        return { fence }
      }
      const body = raw.subarray(1)
      const record = JSON.parse((raw[0] === FORMAT_DEFLATE ? inflateRawSync(body) : body).toString('utf8')) as { v: unknown, e: number }
      this.#counters.l2Hits++
      return { fence, record: { value: record.v, expiresAt: record.e } }
    } catch {
      this.#counters.l2Errors++
      return { fence: null }
    }
  }

  async write (key: string, value: unknown, ttlMs: number, tags: string[], fence: unknown): Promise<boolean> {
    // No fence: L2 is off, untrusted, or was unreachable at the read; L1 alone decides.
    if (!this.#o.l2 || typeof fence !== 'string') return true
    try {
      return await this.#fencedWrite(key, value, ttlMs, tags, fence)
    } catch {
      // Whether an invalidation came during the load is unknown: store nothing (callers that joined reload).
      this.#counters.l2Errors++
      return false
    }
  }

  /** The write script: stores the value with its start sequence and tags unless an invalidation touching them came after `fence`. */
  async #fencedWrite (key: string, value: unknown, ttlMs: number, tags: string[], fence: string): Promise<boolean> {
    const bar = fence.lastIndexOf('|')
    const boot = fence.slice(0, bar)
    const start = fence.slice(bar + 1)
    const ttl = Math.max(1, Math.floor(ttlMs))
    const json = Buffer.from(JSON.stringify({ v: value, e: this.#engine.options.now() + ttl }))
    const header = Buffer.from(JSON.stringify([Number(start), tags]))
    const payload = json.length > this.#compressAbove
      ? Buffer.concat([header, NEWLINE, Buffer.of(FORMAT_DEFLATE), deflateRawSync(json)])
      : Buffer.concat([header, NEWLINE, Buffer.of(FORMAT_JSON), json])
    const k = this.#k
    const keys = [k.boot, k.g, this.#valueKey(key), this.#keyMark(key), k.m]
    for (const tag of tags) keys.push(this.#tagKey(tag), this.#epochKey(tag))
    const written = await this.#script(WRITE_SCRIPT, WRITE_SHA, keys, [boot, start, payload, ttl, key]) === 1
    if (!written) this.#counters.refused++
    return written
  }

  /** EVALSHA, loading the script with EVAL the first time a server does not know it. */
  async #script (script: string, sha: string, keys: string[], args: Array<string | Buffer | number>): Promise<unknown> {
    try {
      return await this.#command(this.#client.evalshaBuffer(sha, keys.length, ...keys, ...args))
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error
      return this.#command(this.#client.evalBuffer(script, keys.length, ...keys, ...args))
    }
  }

  /**
   * Queues one invalidation (already applied here) for Redis and the bus,
   * and waits until every instance acknowledged it, at most `ackTimeoutMs`.
   * Rejects with FST_AUTHZ_BUS_FAILED when Redis did not take it in that
   * time; it stays queued and is retried in order.
   */
  async publish (request: InvalidationRequest): Promise<Delivery> {
    const message = this.#bus?.message(request)
    if (message !== undefined) this.#bus?.track(message.id)
    const op: Op = { type: 'invalidate', request, message, receivers: 0 }
    const started = performance.now()
    const taken = this.#outbox.push(op)
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), this.#o.ackTimeoutMs) })
    const outcome = await Promise.race([taken.then(() => 'taken' as const, (error: Error) => error), late])
    clearTimeout(timer)
    if (outcome !== 'taken') {
      if (message !== undefined) this.#bus?.forget(message.id)
      taken.catch(() => {})
      throw new FST_AUTHZ_BUS_FAILED({ cause: outcome === 'late' ? new Error(`Redis did not take the invalidation within ackTimeoutMs (${this.#o.ackTimeoutMs} ms); it is queued and retried`) : outcome })
    }
    if (message === undefined || this.#bus === undefined) return { acknowledged: 1, instances: 1 }
    const left = Math.max(0, this.#o.ackTimeoutMs - (performance.now() - started))
    const instances = Math.max(op.receivers, this.#bus.peers())
    const acknowledged = await this.#bus.acknowledged(message.id, instances, left)
    if (acknowledged < instances) {
      this.#counters.ackTimeouts++
      this.#log.warn({ acknowledged, instances, authzInvalidation: request }, 'authz cache: not every instance acknowledged an invalidation within ackTimeoutMs; those that did not are within their outage bound')
    }
    return { acknowledged, instances }
  }

  /** A direct write: drops the key on every instance and in L2, then writes the new value (fenced), in order with invalidations. */
  replace (key: string, value: unknown, ttlMs: number, tags: string[]): void {
    this.#outbox.push({ type: 'replace', key, value, ttlMs, tags }).catch(() => {})
  }

  /** Delivers one operation of the outbox; rejects when Redis did not take it (it is retried). */
  async #deliver (op: Op): Promise<void> {
    if (op.type === 'replace') {
      const message = this.#bus?.message({ keys: [op.key] })
      const fence = await this.#invalidate({ keys: [op.key] }, message)
      if (!this.#o.l2) return
      await this.#fencedWrite(op.key, op.value, op.ttlMs, op.tags, fence.fence).catch(() => { this.#counters.l2Errors++ })
      return
    }
    const { receivers } = await this.#invalidate(op.request, op.message)
    op.receivers = receivers
    if (op.message !== undefined) this.#counters.published++
    // Housekeeping only: the marks already keep every older value out.
    if (this.#o.l2 && (op.request.all === true || op.request.pattern !== undefined)) {
      await this.#scanDelete(op.request).catch(() => { this.#counters.l2Errors++ })
    }
  }

  /** The invalidation script: marks, deletes, publishes. */
  async #invalidate (request: InvalidationRequest, message: { id: string, text: string } | undefined): Promise<{ fence: string, receivers: number }> {
    const tags = [...invalidationTags(request)]
    const k = this.#k
    const keys = [k.boot, k.seq, k.g, k.m]
    for (const tag of tags) keys.push(this.#tagKey(tag), this.#epochKey(tag))
    for (const key of request.keys ?? []) keys.push(this.#valueKey(key), this.#keyMark(key))
    const global = request.all === true || request.pattern !== undefined
    try {
      const [fence, receivers] = await this.#script(INVALIDATE_SCRIPT, INVALIDATE_SHA, keys,
        [tags.length, this.#epochTtlMs, `${this.#o.keyPrefix}v:`, global ? '1' : '0', message === undefined ? '' : this.#o.channel, message?.text ?? '', randomUUID()]) as [Buffer, number]
      return { fence: fence.toString(), receivers }
    } catch (error) {
      this.#counters.l2Errors++
      throw error
    }
  }

  async #scanDelete (request: InvalidationRequest): Promise<void> {
    const prefix = globLiteral(this.#o.keyPrefix)
    let match: string
    let keep: (key: string) => boolean = () => true
    if (request.all === true) {
      match = `${prefix}[vt]:*`
    } else {
      // Check each match against the engine's own pattern semantics too (MATCH is a glob).
      // compilePattern is linear whatever the pattern; MATCH gets the same pattern with its stars collapsed.
      const exact = compilePattern(request.pattern as string)
      match = `${prefix}v:${redisGlob(request.pattern as string)}`
      keep = (key) => exact.test(key.slice(this.#o.keyPrefix.length + 2))
    }
    let cursor = '0'
    do {
      const [next, keys] = await this.#command(this.#client.scan(cursor, 'MATCH', match, 'COUNT', SCAN_COUNT))
      cursor = next
      const doomed = keys.filter(keep)
      if (doomed.length > 0) await this.#command(this.#client.del(...doomed))
    } while (cursor !== '0')
  }

  stats (): RedisStats {
    const connected = this.#bus === undefined ? this.#client.status === 'ready' : this.#bus.up
    return { connected, ...this.#counters, pending: this.#outbox.pending }
  }

  async close (): Promise<void> {
    this.#closing = true
    this.#engine.detach()
    this.#outbox.close()
    this.#bus?.close()
    if (this.#ownsClient) {
      await withTimeout(this.#client.quit(), this.#o.commandTimeoutMs * 4).catch(() => this.#client.disconnect())
    }
  }
}

/**
 * Connects the shared layer and attaches it to the engine. Never fails the
 * boot on Redis trouble: it waits up to REDIS_BOOT_WAIT_MS for the bus, then
 * goes on with L1 and resolvers while ioredis keeps reconnecting.
 */
export async function connectRedis (engine: AuthzCache, o: ResolvedRedisOptions, log: FastifyBaseLogger): Promise<RedisLayer> {
  const layer = new RedisShared(engine, o, log)
  await layer.waitReady(REDIS_BOOT_WAIT_MS)
  return layer
}
