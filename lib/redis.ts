/**
 * Redis as L2 and as the invalidation bus (SPEC section 8).
 *
 * L2 layout, under `keyPrefix`:
 *   v:{cacheKey}  the value: 1 byte format (0 JSON, 1 deflate-raw JSON) + payload, PX = the entry's TTL
 *   t:{tag}       a set of the cache keys carrying the tag, expiring with its longest member
 *   seq           a counter every invalidation increments
 *   e:{tag}       the `seq` of the last invalidation of the tag (kept EPOCH_TTL_MS)
 *   g             the `seq` of the last invalidation by key, pattern or `all`
 *
 * Fencing across instances: a load reads `seq` together with the value (one
 * MGET). Its write is a Lua script that refuses when `g` or the `e:{tag}` of
 * any tag the entry carries (its decision's own tags included) moved past
 * that `seq`; the load then stores nothing in L2 and, told so, nothing in its
 * own L1. Only invalidations that touch the entry fence it, so frequent
 * invalidations of other users do not stop caching.
 *
 * An invalidation by tags is one Lua script: bump `seq`, mark the tags, read
 * and delete their sets and values, publish. Patterns and `all` add a SCAN.
 *
 * Outages: commands have short timeouts and no offline queue on the client
 * the plugin creates; an L2 error counts as a miss and never fails a
 * request. While the subscriber is disconnected the engine serves no L1
 * entry older than `busOutageMaxStalenessSeconds`; when it is back (and
 * subscribed again), every L1 entry is dropped.
 */
import { createHash, randomUUID } from 'node:crypto'
import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { AuthzCache, SharedHandle, SharedLayer, SharedRead } from './cache.js'
import { FST_AUTHZ_BUS_FAILED } from './errors.js'
import { collapseStars, compilePattern, invalidationTags } from './keys.js'
import type { ResolvedRedisOptions } from './options.js'
import type { InvalidationRequest, RedisStats } from './types.js'

/** How long `register` waits for a first connection before going on with L1 and resolvers only. */
export const REDIS_BOOT_WAIT_MS = 1000
/** Entries a SCAN step asks for when a pattern or `all` reaches L2. */
export const SCAN_COUNT = 1000

const FORMAT_JSON = 0
const FORMAT_DEFLATE = 1

/** The part of an ioredis client this layer uses; a client of ioredis 5 or 6 fits. */
interface RedisLike {
  status: string
  duplicate (override?: Record<string, unknown>): RedisLike
  on (event: string, listener: (...args: any[]) => void): unknown
  once (event: string, listener: (...args: any[]) => void): unknown
  mgetBuffer (...keys: string[]): Promise<Array<Buffer | null>>
  eval (script: string, numKeys: number, ...args: Array<string | Buffer | number>): Promise<unknown>
  evalsha (sha: string, numKeys: number, ...args: Array<string | Buffer | number>): Promise<unknown>
  del (...keys: string[]): Promise<number>
  publish (channel: string, message: string): Promise<number>
  scan (cursor: string, ...args: Array<string | number>): Promise<[string, string[]]>
  subscribe (channel: string): Promise<unknown>
  connect (): Promise<void>
  quit (): Promise<unknown>
  disconnect (): void
}

/** KEYS: g, value key, then (t:{tag}, e:{tag}) pairs. ARGV: start seq, payload, ttl ms, cache key. */
const WRITE_SCRIPT = `
local start = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') > start then return 0 end
for i = 3, #KEYS, 2 do
  if tonumber(redis.call('GET', KEYS[i + 1]) or '0') > start then return 0 end
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
for i = 3, #KEYS, 2 do
  redis.call('SADD', KEYS[i], ARGV[4])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
`

/**
 * KEYS: seq, g, then (t:{tag}, e:{tag}) pairs, then value keys to delete.
 * ARGV: number of tag pairs, epoch TTL ms, value key prefix, bump g (1/0),
 * channel ('' for none), message.
 */
const INVALIDATE_SCRIPT = `
local seq = redis.call('INCR', KEYS[1])
local pairs = tonumber(ARGV[1])
if ARGV[4] == '1' then redis.call('SET', KEYS[2], seq, 'PX', ARGV[2]) end
for i = 3, 2 + pairs * 2, 2 do
  redis.call('SET', KEYS[i + 1], seq, 'PX', ARGV[2])
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do redis.call('DEL', ARGV[3] .. member) end
  redis.call('DEL', KEYS[i])
end
for i = 3 + pairs * 2, #KEYS do redis.call('DEL', KEYS[i]) end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return seq
`

const sha1 = (script: string): string => createHash('sha1').update(script).digest('hex')
const WRITE_SHA = sha1(WRITE_SCRIPT)
const INVALIDATE_SHA = sha1(INVALIDATE_SCRIPT)

/** How long an `e:{tag}` mark outlives its invalidation: longer than any load can run. */
export function epochTtlMs (loaderTimeoutMs: number): number {
  return Math.max(60_000, loaderTimeoutMs * 2)
}

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
  readonly #sub: RedisLike | undefined
  readonly #id = randomUUID()
  readonly #seqKey: string
  readonly #globalKey: string
  readonly #epochTtlMs: number
  readonly #compressAbove: number
  readonly #counters = { l2Hits: 0, l2Misses: 0, l2Errors: 0, published: 0, received: 0, outages: 0 }
  #subscribed = false
  #waiters: Array<() => void> = []
  #closing = false
  #warned = false

  constructor (engine: AuthzCache, o: ResolvedRedisOptions, log: FastifyBaseLogger) {
    // Attached first: the engine's handle is this layer's only way into the engine.
    this.#engine = engine.attachShared(this, { busOutageMaxStalenessSeconds: o.busOutageMaxStalenessSeconds })
    this.#o = o
    this.#log = log
    this.#seqKey = `${o.keyPrefix}seq`
    this.#globalKey = `${o.keyPrefix}g`
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
    if (o.bus) {
      this.#engine.busDown()
      this.#sub = this.#client.duplicate({
        enableOfflineQueue: true,
        maxRetriesPerRequest: null,
        commandTimeout: undefined,
        retryStrategy: (times: number) => Math.min(times * 100, 2000)
      })
      this.#sub.on('error', this.#onError)
      this.#sub.on('message', this.#onMessage)
      this.#sub.on('ready', this.#onReady)
      this.#sub.on('close', this.#onClose)
      // A duplicate of a lazyConnect client waits for a command that would never come.
      if (this.#sub.status === 'wait') this.#sub.connect().catch(() => {})
    }
  }

  /** Resolves once the command client is ready and the bus subscribed, or after `ms`. */
  async waitReady (ms: number): Promise<void> {
    const until = Date.now() + ms
    const wait = (register: (done: () => void) => void): Promise<void> => new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, until - Date.now()))
      register(() => {
        clearTimeout(timer)
        resolve()
      })
    })
    if (this.#client.status !== 'ready') await wait((done) => this.#client.once('ready', done))
    if (this.#sub !== undefined && !this.#subscribed) await wait((done) => this.#waiters.push(done))
  }

  readonly #onError = (error: Error): void => {
    if (!this.#warned && !this.#closing) {
      this.#warned = true
      this.#log.warn({ err: error }, 'authz cache: Redis unreachable; serving from L1 and resolvers until it is back')
    }
  }

  readonly #onReady = (): void => {
    const sub = this.#sub as RedisLike
    // Subscribe again before declaring the bus up, so no invalidation falls in between.
    sub.subscribe(this.#o.channel).then(() => {
      if (this.#closing) return
      this.#subscribed = true
      this.#warned = false
      const dropped = this.#engine.busUp()
      if (dropped > 0) this.#log.info({ dropped }, 'authz cache: invalidation bus back; dropped L1 entries stored before it came back')
      for (const waiter of this.#waiters.splice(0)) waiter()
    }, (error: Error) => this.#onError(error))
  }

  readonly #onClose = (): void => {
    if (this.#closing) return
    if (this.#subscribed) {
      this.#subscribed = false
      this.#counters.outages++
      this.#log.warn('authz cache: invalidation bus disconnected; L1 entries older than %d s are not served until it is back', this.#o.busOutageMaxStalenessSeconds)
    }
    this.#engine.busDown()
  }

  readonly #onMessage = (channel: string, message: string): void => {
    if (channel !== this.#o.channel) return
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {}
    const envelope = parsed !== null && typeof parsed === 'object' ? parsed as { from?: unknown, request?: unknown } : undefined
    if (envelope?.from === this.#id) return
    this.#counters.received++
    try {
      if (envelope?.request === undefined) throw new TypeError('not a JSON object holding a request')
      this.#engine.apply(envelope.request as InvalidationRequest)
    } catch (error) {
      // Fail safe: the message may have been a revocation, and a lost revocation is worse than a cold cache.
      this.#engine.apply({ all: true })
      this.#log.error({ err: error, bytes: message.length }, 'authz cache: malformed invalidation message on the bus; cleared this instance\'s L1 in case it was a revocation')
    }
  }

  #command<T> (promise: Promise<T>): Promise<T> {
    return this.#ownsClient ? promise : withTimeout(promise, this.#o.commandTimeoutMs)
  }

  #valueKey (key: string): string {
    return `${this.#o.keyPrefix}v:${key}`
  }

  #tagKey (tag: string): string {
    return `${this.#o.keyPrefix}t:${tag}`
  }

  #epochKey (tag: string): string {
    return `${this.#o.keyPrefix}e:${tag}`
  }

  async read (key: string): Promise<SharedRead> {
    if (!this.#o.l2) return { fence: null }
    try {
      const [epoch, raw] = await this.#command(this.#client.mgetBuffer(this.#seqKey, this.#valueKey(key)))
      const fence = epoch === null ? '0' : epoch.toString()
      if (raw === null || raw.length < 2) {
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
    // No fence: L2 is off or was unreachable at the read; L1 alone decides.
    if (!this.#o.l2 || typeof fence !== 'string') return true
    const ttl = Math.max(1, Math.floor(ttlMs))
    const json = Buffer.from(JSON.stringify({ v: value, e: this.#engine.options.now() + ttl }))
    const payload = json.length > this.#compressAbove
      ? Buffer.concat([Buffer.of(FORMAT_DEFLATE), deflateRawSync(json)])
      : Buffer.concat([Buffer.of(FORMAT_JSON), json])
    try {
      const keys = [this.#globalKey, this.#valueKey(key)]
      for (const tag of tags) keys.push(this.#tagKey(tag), this.#epochKey(tag))
      const written = await this.#script(WRITE_SCRIPT, WRITE_SHA, keys, [fence, payload, ttl, key])
      return written === 1
    } catch {
      this.#counters.l2Errors++
      return true
    }
  }

  /** EVALSHA, loading the script with EVAL the first time a server does not know it. */
  async #script (script: string, sha: string, keys: string[], args: Array<string | Buffer | number>): Promise<unknown> {
    try {
      return await this.#command(this.#client.evalsha(sha, keys.length, ...keys, ...args))
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error
      return this.#command(this.#client.eval(script, keys.length, ...keys, ...args))
    }
  }

  /**
   * Fences, removes from L2 and publishes one invalidation. Throws when Redis
   * could not take it: the caller of an async invalidation must know that
   * other instances may still hold the entries.
   */
  async publish (request: InvalidationRequest): Promise<void> {
    const tags = [...invalidationTags(request)]
    const scan = request.all === true || request.pattern !== undefined
    const message = JSON.stringify({ from: this.#id, request })
    const keys = [this.#seqKey, this.#globalKey]
    for (const tag of tags) keys.push(this.#tagKey(tag), this.#epochKey(tag))
    for (const key of request.keys ?? []) keys.push(this.#valueKey(key))
    const bumpGlobal = scan || (request.keys?.length ?? 0) > 0
    try {
      // One script: bump seq, mark the tags, delete their sets and values, and (unless a SCAN must run first) publish.
      await this.#script(INVALIDATE_SCRIPT, INVALIDATE_SHA, keys, [tags.length, this.#epochTtlMs, `${this.#o.keyPrefix}v:`, bumpGlobal ? '1' : '0', !scan && this.#o.bus ? this.#o.channel : '', message])
      if (scan) {
        if (this.#o.l2) await this.#scanDelete(request)
        if (this.#o.bus) await this.#command(this.#client.publish(this.#o.channel, message))
      }
      if (this.#o.bus) this.#counters.published++
    } catch (error) {
      this.#counters.l2Errors++
      this.#log.error({ err: error, authzInvalidation: request }, 'authz cache: could not publish an invalidation; other instances may hold the entries until their TTL')
      throw new FST_AUTHZ_BUS_FAILED({ cause: error })
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
    const connected = this.#sub === undefined ? this.#client.status === 'ready' : this.#subscribed
    return { connected, ...this.#counters }
  }

  async close (): Promise<void> {
    this.#closing = true
    this.#engine.detach()
    this.#sub?.disconnect()
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
